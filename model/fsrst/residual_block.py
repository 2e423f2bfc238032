import torch
from torch import nn


class ResidualBlock(nn.Module):
    """Pre-activation residual block: x + conv(relu(conv(relu(x)))).

    Args:
        channels: number of input and output channels.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))
