"""What happens to a caller's frame before it reaches the server: downscaling, sensor
noise, and lossy compression (JPEG, or a video codec's intra frames, which JPEG
approximates). Training draws a degradation per sample; evaluation names one condition.

A condition is applied to the 32x32 LR frame (the caller downscales, then compresses),
never to the references (sent once, as sharp photos or frames).
"""

import io
import random
from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageFilter

from fsrst.video_codec import MAX_CRF, MIN_CRF

# PIL's `subsampling` codes by their usual names.
CHROMA_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
DOWNSCALE_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "box": Image.BOX,
                     "lanczos": Image.LANCZOS}


def jpeg(image: Image.Image, quality: int, subsampling: str = "4:2:0") -> Image.Image:
    """Encodes and decodes `image` as baseline JPEG (libjpeg through PIL)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg quality: expected 1..100, got {quality}")
    if subsampling not in CHROMA_SUBSAMPLING:
        raise ValueError(f"jpeg subsampling: expected one of {sorted(CHROMA_SUBSAMPLING)}, "
                         f"got {subsampling!r}")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality,
               subsampling=CHROMA_SUBSAMPLING[subsampling])
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def parse_condition(name: str) -> Tuple[str, int, str]:
    """'clean' -> ('clean', 0, ''); 'jpeg75' or 'jpeg75_444' -> ('jpeg', 75, '4:4:4');
    the default subsampling is 4:2:0, what most encoders write."""
    if name == "clean":
        return "clean", 0, ""
    if name.startswith("jpeg"):
        quality, _, chroma = name[4:].partition("_")
        chroma = {"": "4:2:0", "420": "4:2:0", "422": "4:2:2", "444": "4:4:4"}.get(chroma)
        if quality.isdigit() and chroma and 1 <= int(quality) <= 100:
            return "jpeg", int(quality), chroma
    raise ValueError(f"frame condition: expected 'clean' or 'jpeg<1..100>[_420|_422|_444]', "
                     f"got {name!r}")


def apply_condition(lr: Image.Image, name: str) -> Image.Image:
    kind, quality, chroma = parse_condition(name)
    return lr if kind == "clean" else jpeg(lr, quality, chroma)


@dataclass
class DegradationConfig:
    """How training degrades the LR frames (the `degrade` section of a training config).

    Args:
        clean_fraction: share of frames left as PIL bicubic of the target, untouched.
        downscale_filters: the resamplers a caller's pipeline may use, drawn uniformly.
        noise_probability, noise_sigma_max: Gaussian sensor noise (sigma in 8-bit levels,
            drawn uniformly up to the max) before compression.
        jpeg_probability: share of the non-clean frames that are JPEG-compressed.
        jpeg_quality: [min, max], drawn uniformly (integers).
        chroma_subsampling: names from CHROMA_SUBSAMPLING with their weights.
        blur_probability, blur_radius_max: a soft camera: Gaussian blur of the HR frame
            (radius in HR pixels, drawn uniformly up to the max) before it is made small.
        h264_probability: share of the call frames sent as part of their clip's H.264
            stream instead of drawn here (fsrst.training_mix; photos have no stream).
        h264_crfs: the streams' x264 constant qualities, drawn uniformly.
    """

    clean_fraction: float = 0.25
    downscale_filters: List[str] = field(default_factory=lambda: ["bicubic"])
    noise_probability: float = 0.0
    noise_sigma_max: float = 0.0
    jpeg_probability: float = 1.0
    jpeg_quality: Tuple[int, int] = (30, 95)
    chroma_subsampling: dict = field(default_factory=lambda: {"4:2:0": 1.0})
    blur_probability: float = 0.0
    blur_radius_max: float = 0.0
    h264_probability: float = 0.0
    h264_crfs: List[int] = field(default_factory=list)

    @staticmethod
    def from_dict(section: dict) -> "DegradationConfig":
        config = DegradationConfig(**(section or {}))
        for name in config.downscale_filters:
            if name not in DOWNSCALE_FILTERS:
                raise ValueError(f"degrade.downscale_filters: expected names from "
                                 f"{sorted(DOWNSCALE_FILTERS)}, got {name!r}")
        for name in config.chroma_subsampling:
            if name not in CHROMA_SUBSAMPLING:
                raise ValueError(f"degrade.chroma_subsampling: expected names from "
                                 f"{sorted(CHROMA_SUBSAMPLING)}, got {name!r}")
        low, high = config.jpeg_quality
        if not 1 <= low <= high <= 100:
            raise ValueError(f"degrade.jpeg_quality: expected [min, max] within 1..100, "
                             f"got {config.jpeg_quality}")
        for name in ("clean_fraction", "noise_probability", "jpeg_probability",
                     "blur_probability", "h264_probability"):
            if not 0.0 <= getattr(config, name) <= 1.0:
                raise ValueError(f"degrade.{name}: expected a probability in [0, 1], "
                                 f"got {getattr(config, name)}")
        if config.blur_radius_max < 0.0 or config.noise_sigma_max < 0.0:
            raise ValueError(f"degrade.blur_radius_max, noise_sigma_max: expected >= 0, got "
                             f"{config.blur_radius_max}, {config.noise_sigma_max}")
        if config.h264_probability > 0.0 and not config.h264_crfs:
            raise ValueError("degrade.h264_crfs: expected at least one CRF when "
                             "h264_probability > 0, got none")
        for crf in config.h264_crfs:
            if not isinstance(crf, int) or not MIN_CRF <= crf <= MAX_CRF:
                raise ValueError(f"degrade.h264_crfs: expected integers {MIN_CRF}..{MAX_CRF}, "
                                 f"got {crf!r}")
        return config


def blurred(hr: Image.Image, rng: random.Random, config: DegradationConfig) -> Image.Image:
    """`hr` through a soft camera with probability blur_probability, else `hr` itself.
    Without blur it draws nothing, so configs without it draw the frames they drew before."""
    if config.blur_probability > 0.0 and rng.random() < config.blur_probability:
        return hr.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, config.blur_radius_max)))
    return hr


def degraded_lr(hr: Image.Image, scale: int, rng: random.Random,
                config: DegradationConfig) -> Image.Image:
    """The LR frame a caller would send for the HR face `hr`, drawn with `rng`."""
    size = (hr.width // scale, hr.height // scale)
    if rng.random() < config.clean_fraction:
        return hr.resize(size, Image.BICUBIC)
    lr = blurred(hr, rng, config).resize(size,
                                         DOWNSCALE_FILTERS[rng.choice(config.downscale_filters)])
    if rng.random() < config.noise_probability:
        sigma = rng.uniform(0.0, config.noise_sigma_max)
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, sigma, (*size[::-1], 3))
        lr = Image.fromarray(np.clip(np.asarray(lr, np.float32) + noise, 0, 255).round()
                             .astype(np.uint8))
    if rng.random() < config.jpeg_probability:
        names = list(config.chroma_subsampling)
        chroma = rng.choices(names, weights=[config.chroma_subsampling[n] for n in names])[0]
        lr = jpeg(lr, rng.randint(*config.jpeg_quality), chroma)
    return lr
