"""The model variants the project ships, by name."""

from fsrst.fsrst_net import ModelConfig

VARIANTS = {
    # The paper's model: nc = 64, 2.55M parameters.
    "fsrst_x4": ModelConfig(name="fsrst_x4", num_channels=64),
    # The paper's "small" model: nc = 32, 0.87M parameters.
    "fsrst_x4_small": ModelConfig(name="fsrst_x4_small", num_channels=32),
}


def config_for(name: str) -> ModelConfig:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; expected one of {sorted(VARIANTS)}")
    return VARIANTS[name]
