import torch
from torch import nn


class DistanceAggregation(nn.Module):
    """Fuses aligned reference features into the low-resolution features.

    D_i = ||F_L - F_Ri||_2 per pixel (over channels), clamped to [0, 100];
    W_i = exp(-D_i) / (sum_j exp(-D_j) + 1e-9);  F_C = F_L + sum_i W_i * F_Ri.

    Masked slots take no part: their weight is exactly zero and their content
    is never read, so a batch may mix identities with different reference
    counts. With every slot masked (or K = 0) F_C = F_L, the paper's
    single-image fallback.

    Args:
        max_distance: clamp of the per-pixel distance.
        eps: keeps the normaliser positive when every slot is masked.
    """

    def __init__(self, max_distance: float = 100.0, eps: float = 1e-9):
        super().__init__()
        self.max_distance = max_distance
        self.eps = eps

    def forward(self, lr_feat: torch.Tensor, aligned: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """lr_feat [B,C,S,S]; aligned [B,K,C,S,S]; mask [B,K] bool -> [B,C,S,S]."""
        slot = mask[:, :, None, None, None]
        aligned = torch.where(slot, aligned, torch.zeros_like(aligned))
        distance = torch.linalg.vector_norm(lr_feat.unsqueeze(1) - aligned, dim=2, keepdim=True)
        distance = distance.clamp(0.0, self.max_distance)
        score = torch.where(slot, torch.exp(-distance), torch.zeros_like(distance))
        weight = score / (score.sum(dim=1, keepdim=True) + self.eps)
        return lr_feat + (weight * aligned).sum(dim=1)
