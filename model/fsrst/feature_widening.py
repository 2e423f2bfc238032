"""Warm start of a model with more feature channels from one with fewer.

FSRST's low-resolution and reference features share C channels (3 in the paper). Everything
a reference can add to a frame passes through those C values per low-resolution pixel, added
onto the frame's own; with C = 3 that is less than one value per output pixel of the 4x4 block
it has to restore. A model with C' > C starts from a C-channel model's weights like this:

- the feature extractors' last convolutions keep their C output channels; the new C' - C are
  small random (so they carry a signal from the first step);
- the output constructor's first convolution and the aligner's first convolution keep their
  weights for the old channels; those for the new channels are zero.

At the start the output is the old model's, up to the new channels' small effect on the
aggregation's distances; training then grows the new channels. Every other tensor is copied.
"""

from typing import Dict

import torch
from torch import nn

NEW_CHANNEL_STD = 1e-2

# tensors whose first (output) dimension grows with the feature channels
_GROWING_OUTPUTS = ("lr_extractor.tail.weight", "lr_extractor.tail.bias",
                    "reference_extractor.tail.weight", "reference_extractor.tail.bias")
_CONSTRUCTOR_INPUT = "constructor.head.weight"
_ALIGNER_INPUT = "aligner.conv1.weight"   # input = cat(lr_feat, ref_feat)


def widen_state(old: Dict[str, torch.Tensor], model: nn.Module,
                generator: torch.Generator) -> Dict[str, torch.Tensor]:
    """A state dict for `model` (C' feature channels) from `old` (C <= C' channels)."""
    target = model.state_dict()
    old_c = old[_CONSTRUCTOR_INPUT].shape[1]
    new_c = target[_CONSTRUCTOR_INPUT].shape[1]
    if new_c < old_c:
        raise ValueError(f"feature widening: the model has {new_c} feature channels, fewer "
                         f"than the checkpoint's {old_c}")
    state = {}
    for name, tensor in target.items():
        if name not in old:
            continue  # e.g. the aggregation threshold of a legacy checkpoint
        src = old[name]
        if src.shape == tensor.shape:
            state[name] = src.clone()
        elif name in _GROWING_OUTPUTS:
            grown = torch.zeros_like(tensor)
            if name.endswith("weight"):
                grown.normal_(0.0, NEW_CHANNEL_STD, generator=generator)
            grown[:old_c] = src
            state[name] = grown
        elif name == _CONSTRUCTOR_INPUT:
            grown = torch.zeros_like(tensor)
            grown[:, :old_c] = src
            state[name] = grown
        elif name == _ALIGNER_INPUT:
            grown = torch.zeros_like(tensor)
            grown[:, :old_c] = src[:, :old_c]
            grown[:, new_c:new_c + old_c] = src[:, old_c:]
            state[name] = grown
        else:
            raise ValueError(f"feature widening: {name} is {tuple(src.shape)} in the checkpoint "
                             f"and {tuple(tensor.shape)} in the model; only the feature "
                             "channels may differ")
    return state
