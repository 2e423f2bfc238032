"""The model variants the project ships, by name."""

from dataclasses import replace
from typing import Optional

from fsrst.fsrst_net import ModelConfig

VARIANTS = {
    # The paper's model: nc = 64, 2.55M parameters.
    "fsrst_x4": ModelConfig(name="fsrst_x4", num_channels=64),
    # The paper's "small" model: nc = 32, 0.87M parameters.
    "fsrst_x4_small": ModelConfig(name="fsrst_x4_small", num_channels=32),
}


# Shape fields a training config's `model:` section may change (a run's own shape travels in
# its checkpoint, so export and evaluation rebuild the model it trained).
OVERRIDABLE = ("feature_channels",)


def config_for(name: str, overrides: Optional[dict] = None) -> ModelConfig:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; expected one of {sorted(VARIANTS)}")
    config = VARIANTS[name]
    for key, value in (overrides or {}).items():
        if key not in OVERRIDABLE:
            raise ValueError(f"model.{key}: expected one of {list(OVERRIDABLE)}")
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"model.{key}: expected a positive integer, got {value!r}")
        config = replace(config, **{key: value})
    return config
