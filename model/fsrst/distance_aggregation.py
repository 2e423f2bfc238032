from typing import Tuple

import torch
from torch import nn


class DistanceAggregation(nn.Module):
    """Fuses aligned reference features into the low-resolution features.

    D_i = ||F_L - F_Ri||_2 per pixel (over channels), clamped to [0, max_distance];
    W_i = exp(-D_i) / (sum_j exp(-D_j) + exp(-T));  F_C = F_L + sum_i W_i * F_Ri.

    T is a learned distance threshold: a "none of them" slot that competes with the
    references at every pixel, so the model can ignore references that match nothing
    (another person's, a blank photo) instead of spreading a total weight of 1 over
    them. `1 - sum_i W_i` is the share of the aggregation the model ignored.

    Masked slots take no part: their weight is exactly zero and their content
    is never read, so a batch may mix identities with different reference
    counts. With every slot masked (or K = 0) F_C = F_L, the paper's
    single-image fallback.

    Args:
        max_distance: clamp of the per-pixel distance, and the largest threshold.
        initial_threshold: T at initialisation (a pixel whose best reference is
            farther than T leans more on "none" than on that reference).
    """

    def __init__(self, max_distance: float = 100.0, initial_threshold: float = 1.0):
        super().__init__()
        self.max_distance = max_distance
        self.threshold = nn.Parameter(torch.tensor(float(initial_threshold)))

    def weights(self, lr_feat: torch.Tensor, aligned: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """lr_feat [B,C,S,S]; aligned [B,K,C,S,S] (masked slots already zero); mask [B,K]
        -> per-pixel weights [B,K,1,S,S], exactly 0 in masked slots."""
        slot = mask[:, :, None, None, None]
        distance = torch.linalg.vector_norm(lr_feat.unsqueeze(1) - aligned, dim=2, keepdim=True)
        distance = distance.clamp(0.0, self.max_distance)
        score = torch.where(slot, torch.exp(-distance), torch.zeros_like(distance))
        none = torch.exp(-self.threshold.clamp(0.0, self.max_distance))
        return score / (score.sum(dim=1, keepdim=True) + none)

    def forward(self, lr_feat: torch.Tensor, aligned: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """lr_feat [B,C,S,S]; aligned [B,K,C,S,S]; mask [B,K] bool -> [B,C,S,S]."""
        fused, _ = self.fuse(lr_feat, aligned, mask)
        return fused

    def fuse(self, lr_feat: torch.Tensor, aligned: torch.Tensor,
             mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """forward, and the per-pixel weights it used [B,K,1,S,S]."""
        slot = mask[:, :, None, None, None]
        aligned = torch.where(slot, aligned, torch.zeros_like(aligned))
        weight = self.weights(lr_feat, aligned, mask)
        return lr_feat + (weight * aligned).sum(dim=1), weight
