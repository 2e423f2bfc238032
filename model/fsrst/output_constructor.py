import torch
import torch.nn.functional as F
from torch import nn

from fsrst.residual_block import ResidualBlock


class OutputConstructor(nn.Module):
    """Rebuilds the high-resolution face from the fused features.

    conv3x3(C -> nc), residual blocks, conv3x3(nc -> 3*s*s, no bias),
    pixel-shuffle x s, conv3x3(3 -> 3); the result is a residual added to the
    bicubic upscale of the input: clamp(clamp(bicubic(L), 0, 1) + r, 0, 1).

    Args:
        feature_channels: channels C of the fused features (3).
        num_channels: width nc of the body.
        num_blocks: number of residual blocks (20).
        scale: upscaling factor s (4).
    """

    def __init__(self, feature_channels: int, num_channels: int, num_blocks: int = 20,
                 scale: int = 4):
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(feature_channels, num_channels, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(num_channels) for _ in range(num_blocks)])
        self.upsample = nn.Conv2d(num_channels, 3 * scale * scale, 3, padding=1, bias=False)
        self.tail = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, fused: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        x = self.body(self.head(fused))
        residual = self.tail(F.pixel_shuffle(self.upsample(x), self.scale))
        size = [lr.shape[2] * self.scale, lr.shape[3] * self.scale]
        base = F.interpolate(lr, size=size, mode="bicubic", align_corners=False).clamp(0.0, 1.0)
        return (base + residual).clamp(0.0, 1.0)
