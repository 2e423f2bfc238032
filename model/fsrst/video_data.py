"""Talking-head clips: frames of one session of one person, and the call protocol.

Layout (see shared/data/video/README.md): <root>/<clip>/<frame index>.png, 128x128 RGB
head crops of every 4th frame, and <root>/<clip>/clip.json with `fps` and `person`. A
call's references are sharp frames of the same session sent once at its start; its
frames come later. The protocol (the FSRST paper's DFD set, in seconds): references =
the kept frames nearest 0, 1.6 and 3.2 s; targets = 10 frames evenly spaced from 5 s
to the end; a clip shorter than 7 s has the same layout scaled to its length.
"""

import json
import os
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from fsrst.face_data import load_rgb, reference_tensor

REFERENCE_TIMES_S = (0.0, 1.6, 3.2)
FIRST_TARGET_S = 5.0
PROTOCOL_LENGTH_S = 7.0
TARGETS_PER_CLIP = 10


@dataclass
class Clip:
    """One clip: its name, its person, frames per second, and its kept frames in order
    as (frame index, path)."""

    name: str
    person: str
    fps: float
    frames: List[Tuple[int, str]]

    def time_s(self, position: int) -> float:
        return self.frames[position][0] / self.fps

    def kept_fps(self) -> float:
        """The rate of the kept frames (fps over the median step between their indices)."""
        steps = np.diff([index for index, _ in self.frames])
        return self.fps / float(np.median(steps)) if len(steps) else self.fps


def list_clips(root: str) -> List[Clip]:
    """Clips sorted by name; each needs clip.json and at least two frames."""
    clips = []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        meta_path = os.path.join(folder, "clip.json")
        if not os.path.isfile(meta_path):
            continue
        with open(meta_path) as f:
            meta = json.load(f)
        frames = sorted((int(f[:-4]), os.path.join(folder, f)) for f in os.listdir(folder)
                        if f.endswith(".png") and f[:-4].isdigit())
        if len(frames) >= 2:
            clips.append(Clip(name, str(meta.get("person", name)), float(meta["fps"]), frames))
    if not clips:
        raise ValueError(f"{root}: no clip folder with clip.json and at least two frames")
    return clips


def nearest_position(clip: Clip, time_s: float) -> int:
    times = np.array([index / clip.fps for index, _ in clip.frames])
    return int(np.abs(times - time_s).argmin())


def protocol_positions(clip: Clip) -> Tuple[List[int], List[int]]:
    """(reference positions, target positions) into clip.frames. Targets on a very
    short clip may repeat (each clip counts TARGETS_PER_CLIP times) and never fall on a
    reference frame unless the clip has no other."""
    end_s = clip.time_s(len(clip.frames) - 1)
    stretch = min(1.0, end_s / PROTOCOL_LENGTH_S)
    refs = [nearest_position(clip, t * stretch) for t in REFERENCE_TIMES_S]
    available = [p for p in range(len(clip.frames)) if p not in refs] or list(
        range(len(clip.frames)))
    targets = []
    for t in np.linspace(FIRST_TARGET_S * stretch, end_s, TARGETS_PER_CLIP):
        times = np.array([clip.time_s(p) for p in available])
        targets.append(available[int(np.abs(times - t).argmin())])
    return refs, targets


def video_evaluation_samples(root: str, scale: int = 4, hr_size: int = 128,
                             reference_channels: int = 1):
    """The call protocol's samples over every clip: a list of (hr PIL, refs [K,Cr,R,R] (luma,
    or RGB with reference_channels 3), clip index), clip order, TARGETS_PER_CLIP per clip. LR
    is left to the caller (it depends on the frame condition)."""
    samples = []
    for c, clip in enumerate(list_clips(root)):
        refs, targets = protocol_positions(clip)
        ref_tensor = torch.stack([reference_tensor(load_rgb(clip.frames[p][1], hr_size),
                                                   reference_channels) for p in refs])
        for p in targets:
            samples.append((load_rgb(clip.frames[p][1], hr_size), ref_tensor, c))
    return samples


def other_clip_references(samples: Sequence, clips: Sequence[Clip]) -> List[torch.Tensor]:
    """Per sample, the references of the next clip (cyclically) of another person."""
    by_clip = {}
    for _, refs, c in samples:
        by_clip.setdefault(c, refs)
    order = sorted(by_clip)
    donors = {}
    for i, c in enumerate(order):
        for step in range(1, len(order)):
            d = order[(i + step) % len(order)]
            if clips[d].person != clips[c].person:
                donors[c] = by_clip[d]
                break
        else:
            raise ValueError("another person's references need clips of two people")
    return [donors[c] for _, _, c in samples]


def load_clip_frames(clip: Clip, hr_size: int = 128) -> List[Image.Image]:
    return [load_rgb(path, hr_size) for _, path in clip.frames]
