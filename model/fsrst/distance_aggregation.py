from typing import Tuple

import torch
from torch import nn


def merge_slots(aligned: torch.Tensor) -> torch.Tensor:
    """[B,K,C,S,S] -> [B*K,C,S,S], for a 2-d convolution of every slot."""
    shape = aligned.shape
    return aligned.reshape(shape[0] * shape[1], shape[2], shape[3], shape[4])


def _identity_projection(channels: int) -> nn.Conv2d:
    """A 1x1 convolution that starts as the identity (weights eye, bias 0)."""
    conv = nn.Conv2d(channels, channels, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1))
        conv.bias.zero_()
    return conv


class DistanceAggregation(nn.Module):
    """Fuses aligned reference features into the low-resolution features.

    D_i = ||F_L - F_Ri||_2 per pixel (over channels), clamped to [0, max_distance];
    W_i = exp(-D_i) / (sum_j exp(-D_j) + exp(-T));  F_C = F_L + sum_i W_i * F_Ri.

    T is a learned distance threshold: a "none of them" slot that competes with the
    references at every pixel, so the model can ignore references that match nothing
    (another person's, a blank photo) instead of spreading a total weight of 1 over
    them. `1 - sum_i W_i` is the share of the aggregation the model ignored.

    With projections (the paper has none), the distance compares learned keys and the sum adds
    learned values: D_i = ||K_L(F_L) - K_R(F_Ri)||, F_C = F_L + sum_i W_i * V(F_Ri), each a
    1x1 convolution that starts as the identity, so a model trained without them behaves
    the same when they are added. Without them one feature map must both match the frame
    (to get weight) and carry what the frame lacks (to be worth it); with them the reference
    features can keep detail in directions the distance does not look at.

    Masked slots take no part: their weight is exactly zero and their content
    is never read, so a batch may mix identities with different reference
    counts. With every slot masked (or K = 0) F_C = F_L, the paper's
    single-image fallback.

    Args:
        feature_channels: C; only the projections use it.
        projections: learned keys and values (above) instead of the features themselves.
        max_distance: clamp of the per-pixel distance, and the largest threshold.
        initial_threshold: T at initialisation (a pixel whose best reference is
            farther than T leans more on "none" than on that reference).
    """

    def __init__(self, feature_channels: int = 3, projections: bool = False,
                 max_distance: float = 100.0, initial_threshold: float = 1.0):
        super().__init__()
        self.max_distance = max_distance
        self.threshold = nn.Parameter(torch.tensor(float(initial_threshold)))
        self.lr_key: nn.Module = nn.Identity()
        self.reference_key: nn.Module = nn.Identity()
        self.reference_value: nn.Module = nn.Identity()
        if projections:
            self.lr_key = _identity_projection(feature_channels)
            self.reference_key = _identity_projection(feature_channels)
            self.reference_value = _identity_projection(feature_channels)

    def _normalised(self, distance: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        """distance [B,N,1,S,S] (clamped) of N candidates, candidate [B,N] bool -> their
        weights exp(-D) / (sum exp(-D) + exp(-T)), exactly 0 where candidate is false."""
        slot = candidate[:, :, None, None, None]
        score = torch.where(slot, torch.exp(-distance), torch.zeros_like(distance))
        none = torch.exp(-self.threshold.clamp(0.0, self.max_distance))
        return score / (score.sum(dim=1, keepdim=True) + none)

    def weights(self, lr_feat: torch.Tensor, aligned: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """lr_feat [B,C,S,S]; aligned [B,K,C,S,S] (masked slots already zero); mask [B,K]
        -> per-pixel weights [B,K,1,S,S], exactly 0 in masked slots."""
        lr_key = self.lr_key(lr_feat).unsqueeze(1)
        reference_key = self.reference_key(merge_slots(aligned)).reshape(aligned.shape)
        distance = torch.linalg.vector_norm(lr_key - reference_key, dim=2, keepdim=True)
        return self._normalised(distance.clamp(0.0, self.max_distance), mask)

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
        value = self.reference_value(merge_slots(aligned)).reshape(aligned.shape)
        return lr_feat + (weight * value).sum(dim=1), weight
