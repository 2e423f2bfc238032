"""The frame-conditions study: H.264 through the real ffmpeg, the conditions it names, its
samples against fsrst.evaluate's, and its command's refusals."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from face_folders import write_clips
from fsrst import FSRST
from fsrst.evaluate import ROWS, evaluate, video_protocol_samples
from fsrst.frame_conditions_study import (condition_samples, load_call_clips, parse_condition,
                                          study)
from fsrst.image_metrics import psnr_of_images
from fsrst.variants import config_for
from fsrst.video_codec import h264_round_trip

MODEL_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "model")


def moving_frames(count=12, size=32):
    """A bright square that moves across a gradient: something for inter prediction."""
    frames = []
    for t in range(count):
        pixels = np.tile(np.linspace(40, 200, size, dtype=np.float64), (size, 1))
        pixels = np.stack([pixels, pixels[::-1], pixels.T], axis=2)
        pixels[8:16, 2 + t:10 + t] = 250
        frames.append(Image.fromarray(pixels.astype(np.uint8)))
    return frames


def test_h264_round_trip_keeps_every_frame_and_costs_fewer_bytes_at_a_higher_crf():
    frames = moving_frames()
    fine, fine_bytes = h264_round_trip(frames, 18, fps=7.5)
    coarse, coarse_bytes = h264_round_trip(frames, 40, fps=7.5)
    assert len(fine) == len(coarse) == len(frames)
    assert all(f.size == (32, 32) and f.mode == "RGB" for f in fine + coarse)
    assert 0 < coarse_bytes < fine_bytes
    fine_psnr = np.mean([psnr_of_images(a, b) for a, b in zip(fine, frames)])
    coarse_psnr = np.mean([psnr_of_images(a, b) for a, b in zip(coarse, frames)])
    assert coarse_psnr < fine_psnr
    assert fine_psnr > 30  # CRF 18 is close to the source


@pytest.mark.parametrize("crf, frames, message", [
    (-1, moving_frames(2), "crf: expected 0 to 51, got -1"),
    (52, moving_frames(2), "crf: expected 0 to 51, got 52"),
    (23, [], "frames: expected at least one frame, got none"),
    (23, [Image.new("RGB", (31, 32))], "frames: expected one even size for all"),
])
def test_h264_round_trip_refuses_what_it_cannot_encode(crf, frames, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        h264_round_trip(frames, crf, fps=7.5)


def test_conditions_parse_and_unknown_ones_are_named():
    assert parse_condition("clean") == ("clean", 0)
    assert parse_condition("h264_crf28") == ("h264_crf", 28)
    assert parse_condition("blur2") == ("blur", 2)
    for bad in ("jpeg", "clean5", "sharpen3", "h264_crf", "noise-1"):
        with pytest.raises(ValueError, match=f"condition '{bad}': expected clean, jpeg<q>"):
            parse_condition(bad)


def test_clean_samples_are_fsrst_evaluates_and_degraded_ones_cost_fidelity(tmp_path):
    root = write_clips(tmp_path / "clips", clips=2, seconds=8.0, fps=10.0)
    clean, clean_others, cost, _ = condition_samples(load_call_clips(root), "clean")
    reference, reference_others = video_protocol_samples(root)
    assert cost == 0.0 and len(clean) == len(reference) == 20
    for (lr, refs, hr), (lr2, refs2, hr2) in zip(clean, reference):
        assert torch.equal(lr, lr2) and torch.equal(refs, refs2) and torch.equal(hr, hr2)
    assert all(torch.equal(a, b) for a, b in zip(clean_others, reference_others))
    coded, _, coded_cost, fidelity = condition_samples(load_call_clips(root, clips=1),
                                                       "h264_crf35")
    assert len(coded) == 10 and coded_cost > 0 and fidelity < 40
    # A model's rows are fsrst.evaluate's on the same samples.
    torch.manual_seed(0)
    model = FSRST(config_for("fsrst_x4_small")).eval()
    results = study(model, root, ["clean"], clips=0)
    rows = evaluate(model, reference, reference_others)
    assert results["clean"]["frames"] == 20
    for name in ROWS:
        assert results["clean"][name] == pytest.approx(rows[name]["psnr"], abs=1e-6)


def run_study(*args):
    return subprocess.run([sys.executable, "-m", "fsrst.frame_conditions_study",
                           "--weights", "weights/fsrst_x4_small.pt", *args],
                          cwd=MODEL_DIR, capture_output=True, text=True, timeout=120)


def test_the_command_names_a_bad_condition_and_a_negative_clip_count():
    result = run_study("--conditions", "clean", "vhs3")
    assert result.returncode == 2
    assert "condition 'vhs3': expected clean, jpeg<q>, noise<sigma>, blur<radius> or " \
           "h264_crf<n>" in result.stderr
    result = run_study("--clips=-2")
    assert result.returncode == 2
    assert "--clips: expected 0 (all) or more, got -2" in result.stderr
