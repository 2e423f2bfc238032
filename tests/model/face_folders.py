"""Writes small face folders (one sub-folder of PNG photos per identity) for the model tests."""

import os

import numpy as np
from PIL import Image


def write_faces(root, identities=3, photos=4):
    """Identity k's photos are noise around grey level 60 + 60 k, so people differ."""
    rng = np.random.default_rng(0)
    for k in range(identities):
        folder = os.path.join(root, f"person{k}")
        os.makedirs(folder)
        for n in range(photos):
            pixels = np.clip(60 + 60 * k + rng.normal(0, 20, (128, 128, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(folder, f"{n}.png"))
    return str(root)
