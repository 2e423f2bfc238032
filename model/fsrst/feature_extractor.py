import torch
from torch import nn

from fsrst.residual_block import ResidualBlock


class FeatureExtractor(nn.Module):
    """conv3x3(in -> nc), residual blocks, conv3x3(nc -> out).

    Used twice in FSRST: on the RGB low-resolution face (in=3) and on the
    pixel-unshuffled luma of each reference (in=16); both map to a 3-channel
    feature map at the low resolution, so the two can be compared pixel-wise.

    Args:
        in_channels: channels of the input.
        num_channels: width nc of the body.
        num_blocks: number of residual blocks.
        out_channels: channels of the feature map.
    """

    def __init__(self, in_channels: int, num_channels: int, num_blocks: int = 5,
                 out_channels: int = 3):
        super().__init__()
        self.head = nn.Conv2d(in_channels, num_channels, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(num_channels) for _ in range(num_blocks)])
        self.tail = nn.Conv2d(num_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(self.head(x)))
