from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fsrst.distance_aggregation import DistanceAggregation, merge_slots

# A shifted candidate's penalty (added to its distance) at initialisation: exp(-4) ~ 0.02 of
# the weight of an unshifted one at the same distance, so a model trained without the search
# starts close to where it was.
INITIAL_SHIFT_PENALTY = 4.0


class LocalSearchAggregation(DistanceAggregation):
    """DistanceAggregation where each low-resolution pixel also looks at the aligned
    references' features a few pixels around it.

    The spatial transformer aligns a whole reference with one affine transform; a face
    between two frames of a call also moves inside (mouth, eyes, a turned head), so the
    reference pixel that matches may be next to the one the transform put there. Each of the
    (2r + 1)^2 shifts (dy, dx) within +-r of every reference is a candidate of its own:
    D_i,s = ||K_L(F_L) - shift_s(K_R(F_Ri))|| + P_s, with a learned penalty P_s >= 0 per shift
    (0 for no shift at the start, INITIAL_SHIFT_PENALTY for the others), and the weights are
    normalised over every candidate and the "none" slot as before. The weight reported for a
    reference is the sum over its shifts. Shifted features repeat the border (replicate).
    Masked slots take no part, as in DistanceAggregation.

    Args:
        search_radius: r >= 1, in low-resolution pixels (1 = the 3x3 neighbourhood).
        the rest: as DistanceAggregation.
    """

    def __init__(self, search_radius: int, feature_channels: int = 3,
                 projections: bool = False, max_distance: float = 100.0,
                 initial_threshold: float = 1.0):
        super().__init__(feature_channels, projections, max_distance, initial_threshold)
        if search_radius < 1:
            raise ValueError(f"search_radius: expected >= 1, got {search_radius}")
        self.search_radius = search_radius
        side = 2 * search_radius + 1
        penalty = torch.full((side * side,), INITIAL_SHIFT_PENALTY)
        penalty[side * side // 2] = 0.0  # the unshifted candidate
        self.shift_penalty = nn.Parameter(penalty)

    def _shifted(self, features: torch.Tensor) -> torch.Tensor:
        """[B,K,C,S,S] -> [B,K*N,C,S,S]: every shift of every slot, slot-major."""
        b, k, c, h, w = features.shape
        r = self.search_radius
        padded = F.pad(merge_slots(features), [r, r, r, r], mode="replicate")
        copies: List[torch.Tensor] = []
        for dy in range(2 * r + 1):
            for dx in range(2 * r + 1):
                copies.append(padded[:, :, dy:dy + h, dx:dx + w])
        return torch.stack(copies, 1).reshape(b, k * len(copies), c, h, w)

    def fuse(self, lr_feat: torch.Tensor, aligned: torch.Tensor,
             mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """forward, and the per-pixel weight of each reference (summed over its shifts)
        [B,K,1,S,S]."""
        b, k, c, h, w = aligned.shape
        slot = mask[:, :, None, None, None]
        aligned = torch.where(slot, aligned, torch.zeros_like(aligned))
        keys = self._shifted(self.reference_key(merge_slots(aligned)).reshape(aligned.shape))
        values = self._shifted(self.reference_value(merge_slots(aligned)).reshape(aligned.shape))
        n = keys.shape[1] // k
        lr_key = self.lr_key(lr_feat).unsqueeze(1)
        distance = torch.linalg.vector_norm(lr_key - keys, dim=2, keepdim=True)
        penalty = self.shift_penalty.clamp(0.0, self.max_distance).repeat(k)
        distance = distance.clamp(0.0, self.max_distance) + penalty[None, :, None, None, None]
        weight = self._normalised(distance, mask[:, :, None].expand(b, k, n).reshape(b, k * n))
        fused = lr_feat + (weight * values).sum(dim=1)
        return fused, weight.reshape(b, k, n, 1, h, w).sum(dim=2)
