"""Face photos grouped by identity, and the FSRST training/evaluation samples.

Layout: <root>/<identity>/<n>.png, 128x128 RGB (see shared/data/README.md);
any folder of that layout works (CelebAMask-HQ, DFD exports). A sample is a
target photo (HR), its bicubic downscale (LR, PIL, as the paper), and K other
photos of the same identity as luma references.
"""

import math
import os
import random
from typing import List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image


def list_identities(root: str) -> List[List[str]]:
    """Sorted photo paths per identity (identities sorted by name); only those with >= 2 photos."""
    identities = []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        photos = sorted((f for f in os.listdir(folder) if f.lower().endswith(".png")),
                        key=lambda f: (len(f), f))
        if len(photos) >= 2:
            identities.append([os.path.join(folder, f) for f in photos])
    if not identities:
        raise ValueError(f"{root}: no identity folder with at least two .png photos")
    return identities


def load_rgb(path: str, size: int) -> Image.Image:
    image = Image.open(path).convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return image


def luma(image: Image.Image) -> Image.Image:
    """BT.601 Y, as PIL's convert('YCbCr') gives it."""
    return image.convert("YCbCr").split()[0]


def reference_tensor(image: Image.Image, channels: int = 1) -> torch.Tensor:
    """A reference as the model takes it: [1,R,R] luma (channels 1) or [3,R,R] RGB (3)."""
    if channels not in (1, 3):
        raise ValueError(f"reference channels: expected 1 (luma) or 3 (RGB), got {channels!r}")
    return to_tensor(luma(image) if channels == 1 else image)


def downscale(hr: Image.Image, scale: int) -> Image.Image:
    return hr.resize((hr.width // scale, hr.height // scale), Image.BICUBIC)


def to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def random_affine(image: Image.Image, rng: random.Random, degrees: float, shift: float,
                  scale_range: Tuple[float, float]) -> Image.Image:
    """Small rotation, shift and scale about the centre (reflect-like edge via BICUBIC fill)."""
    angle = rng.uniform(-degrees, degrees)
    scale = rng.uniform(*scale_range)
    dx = rng.uniform(-shift, shift) * image.width
    dy = rng.uniform(-shift, shift) * image.height
    cx, cy = image.width / 2.0, image.height / 2.0
    a = math.radians(angle)
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    # PIL maps output -> input: x_in = A (x_out - c - d) + c
    matrix = (cos, sin, cx - cos * (cx + dx) - sin * (cy + dy),
              -sin, cos, cy + sin * (cx + dx) - cos * (cy + dy))
    return image.transform(image.size, Image.AFFINE, matrix, resample=Image.BICUBIC,
                           fillcolor=None)


def flip_rotate(image: Image.Image, flip: bool, quarter_turns: int) -> Image.Image:
    if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    for _ in range(quarter_turns):
        image = image.transpose(Image.ROTATE_90)
    return image


def evaluation_samples(root: str, num_references: int = 3, scale: int = 4,
                       hr_size: int = 128, reference_channels: int = 1
                       ) -> Sequence[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The fixed evaluation protocol: each photo a target, the next K photos of its
    identity (cyclically) its references. Yields (lr [3,L,L], refs [K,Cr,R,R] (luma, or RGB
    with reference_channels 3), hr [3,H,H])."""
    samples = []
    for photos in list_identities(root):
        images = [load_rgb(p, hr_size) for p in photos]
        for t, hr in enumerate(images):
            refs = [images[(t + k) % len(images)] for k in range(1, num_references + 1)
                    if (t + k) % len(images) != t]
            samples.append((to_tensor(downscale(hr, scale)),
                            torch.stack([reference_tensor(r, reference_channels) for r in refs]),
                            to_tensor(hr)))
    return samples
