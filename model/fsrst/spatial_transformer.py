import torch
import torch.nn.functional as F
from torch import nn


class SpatialTransformer(nn.Module):
    """Aligns a reference feature map to the low-resolution feature map.

    A localisation network looks at the pair (F_L, F_R) and predicts an affine
    transform, which resamples F_R (bilinear, reflection padding). The last
    layer starts at the identity transform, so an untrained aligner returns the
    reference unchanged.

    Args:
        feature_channels: channels C of each feature map (3 in FSRST).
        feature_size: spatial size S of the square feature maps (32).
        hidden_channels: channels of the localisation convolutions.
        hidden_units: width of the first fully connected layer.
    """

    def __init__(self, feature_channels: int = 3, feature_size: int = 32,
                 hidden_channels: int = 32, hidden_units: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(2 * feature_channels, hidden_channels, 5, padding=2)
        self.conv2 = nn.Conv2d(hidden_channels, hidden_channels, 5, padding=2)
        pooled = feature_size // 2
        self.fc1 = nn.Linear(hidden_channels * pooled * pooled, hidden_units)
        self.fc2 = nn.Linear(hidden_units, 6)
        nn.init.zeros_(self.fc2.weight)
        with torch.no_grad():
            self.fc2.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, lr_feat: torch.Tensor, ref_feat: torch.Tensor) -> torch.Tensor:
        """lr_feat, ref_feat: [N, C, S, S] -> ref_feat aligned to lr_feat, [N, C, S, S]."""
        x = torch.cat([lr_feat, ref_feat], dim=1)
        x = torch.relu(F.max_pool2d(self.conv1(x), 2))
        x = torch.relu(self.conv2(x))
        theta = self.fc2(torch.relu(self.fc1(torch.flatten(x, 1)))).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(ref_feat.shape), align_corners=False)
        return F.grid_sample(ref_feat, grid, mode="bilinear", padding_mode="reflection",
                             align_corners=False)
