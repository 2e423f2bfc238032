"""The reference probe: its matchers recover detail that is there, find nothing that is
not, and its command scores a model on a face folder."""

import json
import os
import subprocess
import sys

import pytest
import torch

from face_folders import write_clips, write_faces
from fsrst import FSRST
from fsrst.evaluate import protocol_samples
from fsrst.reference_probe import (check_arguments, detail, global_fit, local_fit, luma_of,
                                   luma_psnr, probe, shifted_copies)
from fsrst.variants import config_for

MODEL_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "model")


def random_details(k=3, size=64, seed=0):
    return torch.randn(k, size, size, generator=torch.Generator().manual_seed(seed))


def test_shifted_copies_move_each_detail_by_every_offset():
    details = random_details(k=2, size=16)
    copies = shifted_copies(details, max_shift=2)
    assert copies.shape == (2, 25, 16, 16)
    assert torch.equal(copies[:, 12], details)                 # (0, 0) in the middle
    # Index dy * 5 + dx holds the detail read from (y + dy - 2, x + dx - 2).
    assert torch.equal(copies[1, 3 * 5 + 4, 4:10, 4:10], details[1, 5:11, 6:12])


def test_global_fit_recovers_a_scaled_shifted_reference_exactly():
    details = random_details()
    residual = 0.7 * shifted_copies(details, 3)[1, 9] - 0.2 * details[2]
    fit = global_fit(residual, details, max_shift=3)
    assert torch.allclose(fit, residual, atol=1e-4)


def test_local_fit_recovers_a_different_reference_and_shift_per_tile():
    details = random_details()
    copies = shifted_copies(details, 2)
    residual = torch.zeros(64, 64)
    for ty in range(4):
        for tx in range(4):
            source = copies[(ty + tx) % 3, (ty * 4 + tx) % 25]
            tile = (slice(16 * ty, 16 * ty + 16), slice(16 * tx, 16 * tx + 16))
            residual[tile] = (0.5 + 0.1 * tx) * source[tile]
    fit = local_fit(residual, details, max_shift=2, patch=16)
    assert torch.allclose(fit, residual, atol=1e-4)


def test_fits_never_make_the_residual_worse_and_explain_little_of_unrelated_noise():
    details = random_details(seed=1)
    residual = random_details(k=1, seed=2)[0]
    truth = torch.zeros(64, 64)
    before = luma_psnr(-residual, truth)
    for fit in (global_fit(residual, details, 4), local_fit(residual, details, 4, 16)):
        after = luma_psnr(fit - residual, truth)
        assert before <= after < before + 0.5


def test_detail_of_a_smooth_image_is_small_and_of_fine_texture_is_not():
    ramp = torch.linspace(0, 1, 128)[None, :].expand(128, 128).contiguous()
    stripes = (torch.arange(128) % 2).float()[None, :].expand(128, 128).contiguous()
    assert float(detail(ramp)[8:-8, 8:-8].abs().max()) < 0.01
    assert float(detail(stripes).abs().mean()) > 0.3


def test_bad_arguments_name_the_field_and_the_expected_value():
    with pytest.raises(ValueError, match="max_shift is -1; expected 0 to 63"):
        check_arguments(-1, 16)
    with pytest.raises(ValueError, match="patch is 12; expected a divisor of 128"):
        check_arguments(4, 12)


def test_probe_scores_every_row_and_the_target_itself_explains_most(tmp_path):
    samples, others = protocol_samples(write_faces(tmp_path, identities=2, photos=4))
    torch.manual_seed(0)
    model = FSRST(config_for("fsrst_x4_small")).eval()
    rows = probe(model, samples, others, max_shift=2, patch=32, batch_size=3)
    assert list(rows) == ["model, no references", "model, own references",
                          "model, another person's references",
                          "+ global fit, own", "+ local fit, own",
                          "+ global fit, another person's", "+ local fit, another person's",
                          "+ global fit, target itself", "+ local fit, target itself"]
    base = rows["model, no references"]
    for name, value in rows.items():
        if name.startswith("+"):   # a fit never makes the model's residual worse
            assert value >= base - 1e-6, name
    # The model's own rows are its outputs with references: scored like the K = 0 row.
    lr, refs, hr = samples[0]
    features = model.encode_references(refs)[None]
    alone = luma_psnr(luma_of(model(lr[None], features, torch.ones(1, len(refs),
                                                                    dtype=torch.bool)))[0],
                      luma_of(hr[None])[0])
    single = probe(model, samples[:1], others[:1], max_shift=2, patch=32)
    assert single["model, own references"] == pytest.approx(alone, abs=1e-4)
    assert single["model, own references"] != single["model, no references"]
    assert rows["+ local fit, target itself"] > rows["+ local fit, own"]


def test_probe_command_prints_the_table_and_writes_json(tmp_path):
    faces = write_faces(tmp_path / "faces", identities=2, photos=4)
    weights = str(tmp_path / "small.pt")
    subprocess.run([sys.executable, "-m", "fsrst.export", "--variant", "fsrst_x4_small",
                    "--out", weights], cwd=MODEL_DIR, check=True, capture_output=True)
    out = str(tmp_path / "probe.json")
    run = subprocess.run([sys.executable, "-m", "fsrst.reference_probe", "--weights", weights,
                          "--data", faces, "--threads", "1", "--json", out],
                         cwd=MODEL_DIR, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "| + local fit, own |" in run.stdout
    assert "global: own minus another person's references" in run.stdout
    assert "the model: own minus another person's references" in run.stdout
    numbers = json.load(open(out))
    assert numbers["samples"] == 8 and numbers["max_shift"] == 4
    assert numbers["set"] == faces and numbers["condition"] == "clean"
    assert len(numbers["luma_psnr"]) == 9
    for flag, value, message in (("--patch", "12", "patch is 12; expected a divisor of 128"),
                                 ("--condition", "jpeg101", "frame condition: expected")):
        bad = subprocess.run([sys.executable, "-m", "fsrst.reference_probe", "--weights",
                              weights, "--data", faces, flag, value],
                             cwd=MODEL_DIR, capture_output=True, text=True)
        assert bad.returncode == 2
        assert message in bad.stderr


def test_probe_command_takes_call_frames_as_callers_send_them(tmp_path):
    clips = write_clips(tmp_path / "clips", clips=2, seconds=8.0, fps=10.0)
    weights = str(tmp_path / "small.pt")
    subprocess.run([sys.executable, "-m", "fsrst.export", "--variant", "fsrst_x4_small",
                    "--out", weights], cwd=MODEL_DIR, check=True, capture_output=True)
    out = {}
    for condition in ("clean", "jpeg75"):
        out[condition] = str(tmp_path / f"{condition}.json")
        run = subprocess.run([sys.executable, "-m", "fsrst.reference_probe", "--weights",
                              weights, "--video", clips, "--condition", condition,
                              "--threads", "1", "--limit", "12", "--json", out[condition]],
                             cwd=MODEL_DIR, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert f"on {clips}, {condition} frames: 12 targets" in run.stdout
    clean, q75 = (json.load(open(out[c])) for c in ("clean", "jpeg75"))
    assert clean["set"] == clips and q75["condition"] == "jpeg75" and q75["samples"] == 12
    # The compressed frame is another input: the model's output, and so its residual, differ.
    base = "model, no references"
    assert clean["luma_psnr"][base] != q75["luma_psnr"][base]
