"""Writes small face folders (one sub-folder of PNG photos per identity) and clip folders
(one sub-folder of numbered frames and a clip.json per clip) for the model tests."""

import json
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


def write_clips(root, clips=2, seconds=8.0, fps=10.0, step=4, people=None):
    """Clip c keeps every `step`-th frame of `seconds` at `fps`; its frames are noise around
    grey level 60 + 60 c, so clips differ; `people` names each clip's person (default: one
    person per clip)."""
    rng = np.random.default_rng(1)
    people = people or [f"person{c}" for c in range(clips)]
    for c in range(clips):
        folder = os.path.join(root, f"clip{c}")
        os.makedirs(folder)
        frames = int(seconds * fps)
        for index in range(0, frames, step):
            pixels = np.clip(60 + 60 * c + rng.normal(0, 20, (128, 128, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(folder, f"{index}.png"))
        with open(os.path.join(folder, "clip.json"), "w") as f:
            json.dump({"person": people[c], "fps": fps, "frames": frames, "step": step}, f)
    return str(root)
