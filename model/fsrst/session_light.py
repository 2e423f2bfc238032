"""A call's light, drawn per training sample: the same change of brightness, contrast and
saturation for the target and its references (one session, one room), and a small change of
brightness per reference on top (the light moves between a call's first seconds and later).

80 training clips of 50 people show the model a few dozen rooms, and it gains more on its own
training clips than on val (docs/model.md, "What limits them"). Relighting a sample makes new
rooms from the same people, so the frame's colour and level must come from the frame and
its references rather than from who the person is.

The section is `augment.light` of a training config; every amount is a half-width: a factor is
drawn uniformly from [1 - amount, 1 + amount]. Without the section nothing is drawn, so
configs without it draw the samples they drew before.
"""

import random
from dataclasses import dataclass, fields
from typing import Tuple

from PIL import Image, ImageEnhance

MAX_AMOUNT = 0.5   # a factor of 0.5..1.5: beyond it a face is under- or over-exposed


@dataclass(frozen=True)
class LightConfig:
    """Args (each a half-width in [0, MAX_AMOUNT]):
        brightness, contrast, saturation: the session's change, shared by the target and
            its references.
        reference_brightness: each reference's own change of brightness, on top.
    """

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    reference_brightness: float = 0.0

    @staticmethod
    def from_dict(section: dict) -> "LightConfig":
        section = section or {}
        names = [f.name for f in fields(LightConfig)]
        for name, amount in section.items():
            if name not in names:
                raise ValueError(f"augment.light: expected keys from {names}, got {name!r}")
            if (not isinstance(amount, (int, float)) or isinstance(amount, bool)
                    or not 0.0 <= amount <= MAX_AMOUNT):
                raise ValueError(f"augment.light.{name}: expected a number in "
                                 f"[0, {MAX_AMOUNT}], got {amount!r}")
        return LightConfig(**{name: float(amount) for name, amount in section.items()})

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f.name) > 0.0 for f in fields(self))


# (brightness, contrast, saturation) factors; (1, 1, 1) leaves an image as it is.
Factors = Tuple[float, float, float]


def draw_session(rng: random.Random, config: LightConfig) -> Factors:
    return (rng.uniform(1.0 - config.brightness, 1.0 + config.brightness),
            rng.uniform(1.0 - config.contrast, 1.0 + config.contrast),
            rng.uniform(1.0 - config.saturation, 1.0 + config.saturation))


def draw_reference(rng: random.Random, config: LightConfig, session: Factors) -> Factors:
    """The session's factors with this reference's own brightness on top."""
    own = rng.uniform(1.0 - config.reference_brightness, 1.0 + config.reference_brightness)
    return session[0] * own, session[1], session[2]


def relit(image: Image.Image, factors: Factors) -> Image.Image:
    """`image` (RGB) under the light `factors`: saturation, then contrast, then brightness."""
    brightness, contrast, saturation = factors
    if saturation != 1.0:
        image = ImageEnhance.Color(image).enhance(saturation)
    if contrast != 1.0:
        image = ImageEnhance.Contrast(image).enhance(contrast)
    if brightness != 1.0:
        image = ImageEnhance.Brightness(image).enhance(brightness)
    return image
