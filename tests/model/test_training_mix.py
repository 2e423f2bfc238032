"""Training samples as callers send them: sources, wrong and missing references, degradation."""

import numpy as np
import pytest
import torch

from face_folders import write_clips, write_faces
from fsrst.face_data import to_tensor
from fsrst.training_mix import TrainingMix

# write_faces: person k is grey level 60 + 60 k; write_clips: clip c is 60 + 60 c. Faces and
# clips are made to differ by level: faces at 60/120, clips at 180/240 via offsets below.


@pytest.fixture
def roots(tmp_path):
    faces = write_faces(tmp_path / "faces", identities=2, photos=4)      # levels 60, 120
    clips = tmp_path / "clips"
    write_clips(clips, clips=4, seconds=8.0, fps=10.0)                   # 60, 120, 180, 240
    # Keep only the two brightest clips, so a level names its source and person.
    import shutil
    shutil.rmtree(clips / "clip0")
    shutil.rmtree(clips / "clip1")
    return faces, str(clips)


def level(t):
    return round(float(t.mean()) * 255 / 60) * 60


def data(**overrides):
    base = {"num_references": 3, "reference_dropout": 0.0, "video_fraction": 0.5}
    base.update(overrides)
    return base


def test_references_are_the_same_persons_and_the_sample_is_reproducible(roots):
    mix = TrainingMix(*roots, data(), seed=3)
    sources = set()
    for i in range(40):
        lr, refs, mask, hr, wrong = mix[i]
        assert lr.shape == (3, 32, 32) and refs.shape == (3, 1, 128, 128)
        assert hr.shape == (3, 128, 128) and mask.dtype == torch.bool and bool(mask.all())
        assert wrong.dtype == torch.bool and wrong.shape == (3,) and not bool(wrong.any())
        assert {level(r) for r in refs} == {level(hr)}
        sources.add(level(hr))
    assert sources == {60, 120, 180, 240}   # both sources and every person
    again = TrainingMix(*roots, data(), seed=3)[5]
    assert all(torch.equal(a, b) for a, b in zip(mix[5], again))


def test_wrong_references_are_another_persons(roots):
    mix = TrainingMix(*roots, data(references_wrong=1.0), seed=1)
    for i in range(20):
        _, refs, _, hr, wrong = mix[i]
        assert level(hr) not in {level(r) for r in refs}
        assert bool(wrong.all())


def test_one_wrong_reference_is_one_slot(roots):
    mix = TrainingMix(*roots, data(one_reference_wrong=1.0), seed=1)
    for i in range(20):
        _, refs, _, hr, wrong = mix[i]
        assert sorted(level(r) == level(hr) for r in refs) == [False, True, True]
        # The flag names the stranger's slot, which is what the training loss penalises.
        assert [bool(w) for w in wrong] == [level(r) != level(hr) for r in refs]


def test_missing_references_mask_every_slot(roots):
    mix = TrainingMix(*roots, data(references_missing=1.0), seed=1)
    assert not any(bool(mix[i][2].any()) for i in range(10))


def test_call_references_keep_their_distance_from_the_target(roots):
    faces, clips = roots
    mix = TrainingMix(faces, clips, data(video_fraction=1.0, min_reference_gap_s=2.0), seed=2)
    for i in range(20):
        import random
        rng = random.Random(i)
        hr, refs, who, _ = mix._clip_sample(rng)
        assert who[0] == "clip" and len(refs) == 3
        frames = mix.clip_frames[[c.person for c in mix.clips].index(who[1])]
        target = frames.index(hr)
        clip = mix.clips[[c.person for c in mix.clips].index(who[1])]
        for r in refs:
            assert abs(clip.time_s(frames.index(r)) - clip.time_s(target)) >= 2.0


def test_degraded_frames_differ_from_clean_ones(roots):
    clean = TrainingMix(*roots, data(), seed=4)
    compressed = TrainingMix(*roots, data(), degrade={"clean_fraction": 0.0, "jpeg_quality": [30, 30]},
                             seed=4)
    for i in range(5):
        a, b = clean[i], compressed[i]
        assert torch.equal(a[3], b[3]) and not torch.equal(a[0], b[0])


def test_h264_frames_are_the_clips_decoded_stream_aligned_with_their_target(roots):
    faces, clips = roots
    # CRF 18: good enough that every decoded frame of these noise clips is a different one.
    degrade = {"clean_fraction": 0.0, "jpeg_probability": 0.0, "h264_probability": 1.0,
               "h264_crfs": [18]}
    # The light is on, and must not touch these samples: the stream was encoded unlit.
    augment = {"flip": True, "degrees": 10.0, "shift": 0.1, "light": {"brightness": 0.3}}
    mix = TrainingMix(faces, clips, data(video_fraction=1.0), augment=augment, degrade=degrade,
                      seed=5)
    # Encoded once per clip and CRF when the mix is built, every kept frame, 32x32.
    assert [sorted(s) for s in mix.h264_frames] == [[18], [18]]
    assert [len(s[18]) for s in mix.h264_frames] == [len(f) for f in mix.clip_frames]
    assert mix.h264_frames[0][18][0].size == (32, 32)
    position = {}  # a decoded frame's bytes (and its mirror's) -> (clip, frame, mirrored)
    for c, streams in enumerate(mix.h264_frames):
        for k, f in enumerate(streams[18]):
            position[np.asarray(f).tobytes()] = (c, k, False)
            position[np.ascontiguousarray(np.asarray(f)[:, ::-1]).tobytes()] = (c, k, True)
    assert len(position) == 2 * sum(len(f) for f in mix.clip_frames)
    mirrored = set()
    for i in range(12):
        lr, _, _, hr, _ = mix[i]
        sent = (lr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8).tobytes()
        # The sent frame is a decoded frame of the stream (or its mirror image) ...
        assert sent in position
        c, k, flipped = position[sent]
        mirrored.add(flipped)
        # ... and the target is exactly the frame the stream was made from, mirrored alike
        # and never shifted or turned against it (the affine is for the references only).
        source = to_tensor(mix.clip_frames[c][k])
        assert torch.equal(hr, source.flip(-1) if flipped else source)
    assert mirrored == {False, True}
    # The decoded frame is not the clean one: the codec's loss is what training sees.
    clean = TrainingMix(faces, clips, data(video_fraction=1.0), augment=augment, seed=5)
    assert not torch.equal(clean[0][0], mix[0][0])


def test_photos_never_take_an_h264_frame(roots):
    faces, clips = roots
    degrade = {"clean_fraction": 1.0, "h264_probability": 1.0, "h264_crfs": [28]}
    mix = TrainingMix(faces, clips, data(video_fraction=0.0), degrade=degrade, seed=6)
    plain = TrainingMix(faces, clips, data(video_fraction=0.0), seed=6)
    for i in range(6):
        assert torch.equal(mix[i][0], plain[i][0])


def relit_and_plain(roots, light, count=12):
    """Sample pairs of photos (levels 60/120, far from clipping), RGB references, no other
    augmentation: relit with `light`, and as drawn without it."""
    lit = TrainingMix(*roots, data(video_fraction=0.0), augment={"light": light}, seed=7,
                      reference_channels=3)
    plain = TrainingMix(*roots, data(video_fraction=0.0), seed=7, reference_channels=3)
    return [(lit[i], plain[i]) for i in range(count)]


def test_light_relights_the_target_and_its_references_as_one_session(roots):
    pairs = relit_and_plain(roots, {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3})
    brightness = []
    for (lr, refs, _, hr, _), (plain_lr, plain_refs, _, plain_hr, _) in pairs:
        level_ratio = float(hr.mean() / plain_hr.mean())
        spread_ratio = float(hr.std() / plain_hr.std())
        brightness.append(level_ratio)
        assert float(lr.mean() / plain_lr.mean()) == pytest.approx(level_ratio, abs=0.02)
        for ref, plain_ref in zip(refs, plain_refs):
            assert float(ref.mean() / plain_ref.mean()) == pytest.approx(level_ratio, abs=0.02)
            assert float(ref.std() / plain_ref.std()) == pytest.approx(spread_ratio, abs=0.03)
    assert min(brightness) < 0.9 and max(brightness) > 1.1   # each session its own light


def test_each_reference_gets_its_own_brightness_on_top(roots):
    for (_, refs, _, hr, _), (_, plain_refs, _, plain_hr, _) in relit_and_plain(
            roots, {"reference_brightness": 0.2}):
        assert torch.equal(hr, plain_hr)   # no session change: the target is as drawn
        ratios = [float(r.mean() / p.mean()) for r, p in zip(refs, plain_refs)]
        assert all(0.79 <= x <= 1.21 for x in ratios)
        assert max(ratios) - min(ratios) > 0.005


@pytest.mark.parametrize("light", [{}, {"brightness": 0.0, "reference_brightness": 0.0}])
def test_light_without_amounts_draws_the_samples_it_drew_before(roots, light):
    for lit, plain in relit_and_plain(roots, light, count=4):
        assert all(torch.equal(a, b) for a, b in zip(lit, plain))


@pytest.mark.parametrize("light, message", [
    ({"hue": 0.1}, "augment.light: expected keys from"),
    ({"brightness": 0.51}, "augment.light.brightness: expected a number in [0, 0.5], got 0.51"),
    ({"contrast": -0.1}, "augment.light.contrast: expected a number in [0, 0.5], got -0.1"),
    ({"saturation": "0.2"}, "augment.light.saturation: expected a number in [0, 0.5], got '0.2'"),
    ({"reference_brightness": True}, "augment.light.reference_brightness: expected a number"),
])
def test_light_settings_out_of_bounds_are_refused_by_name(roots, light, message):
    with pytest.raises(ValueError) as error:
        TrainingMix(*roots, data(), augment={"light": light})
    assert message in str(error.value)
