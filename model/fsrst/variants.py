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


# Shape fields a training config's `model:` section may change, with the values each takes (a
# run's own shape travels in its checkpoint, so export and evaluation rebuild the model it
# trained).
OVERRIDABLE = {
    "feature_channels": "a positive integer",
    "reference_projections": "true or false",
    "reference_channels": "1 (luma) or 3 (RGB)",
    "reference_search_radius": "a whole number from 0 to 3",
}


def _valid(key: str, value) -> bool:
    if key == "reference_projections":
        return isinstance(value, bool)
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    if key == "reference_channels":
        return value in (1, 3)
    if key == "reference_search_radius":
        return 0 <= value <= 3
    return value >= 1


def config_for(name: str, overrides: Optional[dict] = None) -> ModelConfig:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; expected one of {sorted(VARIANTS)}")
    config = VARIANTS[name]
    for key, value in (overrides or {}).items():
        if key not in OVERRIDABLE:
            raise ValueError(f"model.{key}: expected one of {list(OVERRIDABLE)}")
        if not _valid(key, value):
            raise ValueError(f"model.{key}: expected {OVERRIDABLE[key]}, got {value!r}")
        config = replace(config, **{key: value})
    return config
