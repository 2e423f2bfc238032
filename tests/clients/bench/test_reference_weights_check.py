"""clients/bench/reference_weights_check.py: issue 22's figure through a real server gives
what the model gives in-process (fsrst.reference_weights_probe) on the same clips."""

import json
import os
import subprocess
import sys

import pytest
import torch

from face_folders import write_clips
from server_process import ROOT, small_model, start_small_server
from fsrst.evaluate import video_protocol_samples, with_condition
from fsrst.reference_weights_probe import by_clip, probe_clips, reference_share

SCRIPT = os.path.join(ROOT, "clients", "bench", "reference_weights_check.py")
CLIPS = 2


def run_check(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=300)


def test_the_servers_figures_are_the_models(tmp_path):
    # Three clips of three people (noise frames): the check uses the first two.
    video = write_clips(tmp_path / "clips", clips=3, seconds=8.0, fps=10.0)
    server = start_small_server()
    try:
        out = tmp_path / "check.json"
        result = run_check(f"--server=127.0.0.1:{server.port}", f"--video={video}",
                           "--conditions", "jpeg75", f"--clips={CLIPS}", f"--json={out}")
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    served = json.loads(out.read_text())["jpeg75"]
    assert "| jpeg75 | 2 |" in result.stdout

    module = torch.jit.load(small_model()).eval()
    video, others = video_protocol_samples(video)
    clips = by_clip(with_condition(video, "jpeg75"), others)[:CLIPS]
    in_process = probe_clips(module, clips)
    assert served["clips"] == in_process["clips"] == CLIPS
    assert served["other_smallest_share"] == in_process["other_smallest_share"]
    # The server's answers are the model's images in uint8, batched with other frames.
    assert served["psnr_4_minus_3_db"] == pytest.approx(in_process["psnr_4_minus_3_db"],
                                                        abs=0.01)
    samples = [s for clip in clips for s in clip["samples"]]
    assert served["share_video"] == pytest.approx(reference_share(module, samples), abs=1e-4)


def test_a_negative_clip_count_is_refused_naming_the_flag():
    result = run_check("--server=127.0.0.1:1", "--clips=-1")
    assert result.returncode == 2
    assert "--clips: expected 0 (all) or more, got -1" in result.stderr
