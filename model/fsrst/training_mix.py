"""Training samples as the service receives them: face photos and call frames, degraded
LR frames, and references that are sometimes missing or another person's.

A sample is (lr [3,L,L], refs [K,Cr,R,R] (luma, or RGB with reference_channels 3), mask [K]
bool, hr [3,H,H], wrong [K] bool: the slots that hold another person's reference). Each index
of each epoch draws from its own generator, so a run is reproducible and resumable.

- Source: with probability `video_fraction` a call frame (a clip drawn uniformly, so
  long clips do not crowd out people; target = a frame of it,
  references = other frames of the same clip, at least `min_reference_gap_s` away when
  the clip allows); else a face photo (drawn uniformly over all photos; references =
  other photos of the identity).
- References: each slot is dropped with `reference_dropout`; all of them with
  `references_missing` (the model must serve K = 0); with `references_wrong` all are
  another person's, with `one_reference_wrong` one slot is (the model must learn to
  ignore references that do not match).
- LR: degradation.degraded_lr (clean bicubic, or a caller's resampler, blur, noise, JPEG);
  or, for a call frame with `degrade.h264_probability`, the frame as its clip's H.264 stream
  delivers it: each clip's kept frames, made small by PIL bicubic, are encoded once per CRF
  of `degrade.h264_crfs` at the kept frames' rate (fsrst.video_codec) when the mix is built.
- Augmentation: one flip (and quarter turn, if set) for the target and its references,
  and an independent small affine per image (the misalignment the spatial transformer
  undoes), except for the target of an H.264 frame, which must stay aligned with the
  decoded stream (it gets the flip only). With `augment.light`, the target and its
  references are relit as one session, each reference a little on its own
  (fsrst.session_light); not an H.264 frame's sample, whose stream was encoded unlit.
"""

import random
from typing import List, Optional

import torch
from PIL import Image

from fsrst.degradation import DegradationConfig, degraded_lr
from fsrst.face_data import (downscale, flip_rotate, list_identities, load_rgb,
                             random_affine, reference_tensor, to_tensor)
from fsrst.session_light import LightConfig, draw_reference, draw_session, relit
from fsrst.video_codec import h264_round_trip
from fsrst.video_data import list_clips, load_clip_frames


class TrainingMix(torch.utils.data.Dataset):
    """Args:
        faces_root: folder of identity folders (face photos).
        video_root: folder of clip folders, or None for photos only.
        data: the config's `data` section (num_references, reference_dropout,
            video_fraction, references_missing, references_wrong, one_reference_wrong,
            min_reference_gap_s).
        augment: the config's `augment` section (degrees, shift, scale_min, scale_max,
            flip, rot90, light: fsrst.session_light.LightConfig).
        degrade: the config's `degrade` section (DegradationConfig); None = clean bicubic.
        seed: base seed.
        reference_channels: 1 = luma references (the paper), 3 = RGB.
    """

    def __init__(self, faces_root: str, video_root: Optional[str], data: dict,
                 augment: dict = None, degrade: Optional[dict] = None, seed: int = 0,
                 scale: int = 4, hr_size: int = 128, reference_channels: int = 1):
        self.reference_channels = reference_channels
        self.photos = [[load_rgb(p, hr_size) for p in photos]
                       for photos in list_identities(faces_root)]
        self.photo_index = [(i, j) for i, photos in enumerate(self.photos)
                            for j in range(len(photos))]
        self.clips = list_clips(video_root) if video_root else []
        self.clip_frames = [load_clip_frames(c, hr_size) for c in self.clips]
        self.num_references = data["num_references"]
        self.dropout = data.get("reference_dropout", 0.0)
        self.video_fraction = data.get("video_fraction", 0.0) if self.clips else 0.0
        self.missing = data.get("references_missing", 0.0)
        self.wrong = data.get("references_wrong", 0.0)
        self.one_wrong = data.get("one_reference_wrong", 0.0)
        self.min_gap_s = data.get("min_reference_gap_s", 0.0)
        self.augment = augment or {}
        self.light = LightConfig.from_dict(self.augment.get("light"))
        self.degrade = DegradationConfig.from_dict(degrade) if degrade is not None else \
            DegradationConfig(clean_fraction=1.0)
        self.seed = seed
        self.scale = scale
        # clip -> crf -> its kept frames as the decoded stream delivers them (32x32).
        self.h264_frames = [
            {crf: h264_round_trip([downscale(f, scale) for f in frames], crf,
                                  clip.kept_fps())[0]
             for crf in self.degrade.h264_crfs}
            for clip, frames in zip(self.clips, self.clip_frames)
        ] if self.degrade.h264_probability > 0.0 else []
        self.epoch = 0
        self.length = sum(len(p) for p in self.photos) + sum(len(f) for f in self.clip_frames)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    # Drawing targets and references ---------------------------------------------------

    def _photo_sample(self, rng: random.Random):
        identity, target = self.photo_index[rng.randrange(len(self.photo_index))]
        photos = self.photos[identity]
        others = [j for j in range(len(photos)) if j != target]
        refs = rng.sample(others, min(self.num_references, len(others)))
        return photos[target], [photos[j] for j in refs], ("photo", identity), None

    def _clip_sample(self, rng: random.Random):
        c = rng.randrange(len(self.clips))
        clip, frames = self.clips[c], self.clip_frames[c]
        target = rng.randrange(len(frames))
        far = [p for p in range(len(frames))
               if abs(clip.time_s(p) - clip.time_s(target)) >= self.min_gap_s and p != target]
        pool = far if len(far) >= self.num_references else [
            p for p in range(len(frames)) if p != target]
        refs = rng.sample(pool, min(self.num_references, len(pool)))
        return frames[target], [frames[p] for p in refs], ("clip", clip.person), (c, target)

    def _another_persons_references(self, rng: random.Random, who) -> List[Image.Image]:
        """References of someone else, from either source."""
        while True:
            if self.clips and rng.random() < self.video_fraction:
                _, refs, other, _ = self._clip_sample(rng)
            else:
                _, refs, other, _ = self._photo_sample(rng)
            if other != who:
                return refs

    # The sample ----------------------------------------------------------------------------

    def __getitem__(self, index: int):
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
        from_video = rng.random() < self.video_fraction
        # who: ("clip", person) or ("photo", identity); frame: (clip, position) of a call
        # frame, None for a photo.
        hr, refs, who, frame = self._clip_sample(rng) if from_video else self._photo_sample(rng)
        draw = rng.random()
        wrong = [False] * len(refs)
        if draw < self.wrong:
            refs = self._another_persons_references(rng, who)
            wrong = [True] * len(refs)
        elif draw < self.wrong + self.one_wrong and refs:
            refs = list(refs)
            slot = rng.randrange(len(refs))
            refs[slot] = rng.choice(self._another_persons_references(rng, who))
            wrong[slot] = True
        mask = [rng.random() >= self.dropout for _ in refs]
        if rng.random() < self.missing:
            mask = [False] * len(refs)

        aug = self.augment
        flip = aug.get("flip", False) and rng.random() < 0.5
        turns = rng.randrange(4) if aug.get("rot90", False) else 0

        def augmented(image: Image.Image) -> Image.Image:
            if aug.get("degrees", 0) or aug.get("shift", 0):
                image = random_affine(image, rng, aug.get("degrees", 0.0), aug.get("shift", 0.0),
                                      (aug.get("scale_min", 1.0), aug.get("scale_max", 1.0)))
            return flip_rotate(image, flip, turns)

        if (frame is not None and self.h264_frames
                and rng.random() < self.degrade.h264_probability):
            clip, position = frame
            lr = self.h264_frames[clip][rng.choice(self.degrade.h264_crfs)][position]
            hr, lr = flip_rotate(hr, flip, turns), flip_rotate(lr, flip, turns)
        else:
            if self.light.enabled:
                session = draw_session(rng, self.light)
                hr = relit(hr, session)
                refs = [relit(r, draw_reference(rng, self.light, session)) for r in refs]
            hr = augmented(hr)
            lr = degraded_lr(hr, self.scale, rng, self.degrade)
        ref_tensors = torch.stack([reference_tensor(augmented(r), self.reference_channels)
                                   for r in refs])
        return (to_tensor(lr), ref_tensors, torch.tensor(mask, dtype=torch.bool), to_tensor(hr),
                torch.tensor(wrong, dtype=torch.bool))
