"""Warm start of a model with RGB references from one with luma references.

A luma model's reference extractor starts with a convolution over the pixel-unshuffled luma
of the reference (16 channels at scale 4). An RGB model's takes the unshuffled R, G and B
planes (48 channels, channel c * 16 + p). Luma is a fixed mix of them (ITU-R BT.601, what
PIL's convert("L") computes), so giving plane c the luma weights times its coefficient makes
the RGB model compute, at the start, what the luma model computed (up to PIL rounding luma to
8 bits). Training then learns what the colour adds. Every other tensor is copied.
"""

from typing import Dict

import torch
from torch import nn

# BT.601 luma: Y = 0.299 R + 0.587 G + 0.114 B (PIL's convert("L")).
LUMA_COEFFICIENTS = (0.299, 0.587, 0.114)
_REFERENCE_INPUT = "reference_extractor.head.weight"


def colour_state(old: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """A state dict for `model` (RGB references) from `old` (luma references)."""
    target = model.state_dict()
    luma_weight = old[_REFERENCE_INPUT]
    if target[_REFERENCE_INPUT].shape[1] != len(LUMA_COEFFICIENTS) * luma_weight.shape[1]:
        raise ValueError(f"reference colour: the model's reference input has "
                         f"{target[_REFERENCE_INPUT].shape[1]} channels and the checkpoint's "
                         f"{luma_weight.shape[1]}; expected 3 times as many (RGB from luma)")
    state = dict(old)
    state[_REFERENCE_INPUT] = torch.cat([luma_weight * c for c in LUMA_COEFFICIENTS], dim=1)
    return state
