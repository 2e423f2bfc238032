"""The evaluation command: its other-person reference row and its table of rows."""

import pytest
import torch

from face_folders import write_clips, write_faces
from fsrst import FSRST
from fsrst.image_metrics import psnr, ssim
from fsrst.evaluate import (bicubic_upscale, evaluate, evaluate_sets, markdown_table, other_identity_references,
                            video_protocol_samples, with_condition)
from fsrst.face_data import evaluation_samples, list_identities
from fsrst.variants import config_for


def test_other_identity_references_come_from_the_next_person(tmp_path):
    root = write_faces(tmp_path, identities=3, photos=4)
    samples = evaluation_samples(root)
    counts = [len(p) for p in list_identities(root)]
    others = other_identity_references(samples, counts)
    assert len(others) == len(samples) == 12
    for i, donor in enumerate(others):
        owner = i // 4
        expected = samples[4 * ((owner + 1) % 3)][1]
        assert torch.equal(donor, expected)
        assert not torch.equal(donor, samples[i][1])
        # Mean luma tells the people apart: the donor is someone else.
        assert abs(float(donor.mean()) - float(samples[i][1].mean())) > 0.15


def test_other_identity_references_need_two_people():
    with pytest.raises(ValueError, match="two identities"):
        other_identity_references([], [4])


def test_evaluate_reports_every_row_over_every_photo(tmp_path):
    root = write_faces(tmp_path, identities=2, photos=4)
    samples = evaluation_samples(root)
    others = other_identity_references(samples, [len(p) for p in list_identities(root)])
    torch.manual_seed(0)
    model = FSRST(config_for("fsrst_x4_small")).eval()
    rows = evaluate(model, samples, others, batch_size=3)
    assert list(rows) == ["bicubic", "own refs", "no refs (K=0)", "another person's refs"]
    for name, row in rows.items():
        assert row["images"] == 8, name
    # Each row is the metric of exactly what it names.
    lr = torch.stack([s[0] for s in samples])
    refs = torch.stack([s[1] for s in samples])
    hr = torch.stack([s[2] for s in samples])
    with torch.no_grad():
        none = model(lr, torch.zeros(8, 0, 3, 32, 32), torch.zeros(8, 0, dtype=torch.bool))
        feats = model.encode_references(refs.flatten(0, 1)).unflatten(0, (8, 3))
        own = model(lr, feats, torch.ones(8, 3, dtype=torch.bool))
    expected = {"bicubic": bicubic_upscale(lr, 4), "no refs (K=0)": none, "own refs": own}
    for name, out in expected.items():
        assert rows[name]["psnr"] == pytest.approx(float(psnr(out, hr).mean()), abs=1e-5), name
        assert rows[name]["ssim"] == pytest.approx(float(ssim(out, hr).mean()), abs=1e-6), name
    # An untrained model's aligner starts at identity, so references reach the output.
    assert rows["own refs"]["psnr"] != rows["another person's refs"]["psnr"]


def test_clean_condition_remakes_exactly_the_protocol_frames(tmp_path):
    samples = evaluation_samples(write_faces(tmp_path, identities=2, photos=4))
    clean = with_condition(samples, "clean")
    for (lr, refs, hr), (lr2, refs2, hr2) in zip(samples, clean):
        assert torch.equal(lr, lr2) and refs2 is refs and hr2 is hr


def test_jpeg_condition_degrades_the_frame_and_only_the_frame(tmp_path):
    samples = evaluation_samples(write_faces(tmp_path, identities=2, photos=4))
    q30 = with_condition(samples, "jpeg30")
    for (lr, _, hr), (lr2, _, hr2) in zip(samples, q30):
        assert lr2.shape == lr.shape and hr2 is hr
        error = float((lr2 - lr).abs().mean()) * 255
        # Noise photos compress badly: a q30 frame is several levels off on average.
        assert error > 3.0, error


def test_video_protocol_rows_and_table(tmp_path):
    root = write_clips(tmp_path / "clips", clips=2, seconds=8.0, fps=10.0)
    samples, others = video_protocol_samples(root)
    assert len(samples) == len(others) == 20   # 10 targets per clip
    torch.manual_seed(0)
    model = FSRST(config_for("fsrst_x4_small")).eval()
    results = evaluate_sets(model, {"video": (samples, others)}, ["clean", "jpeg75"])
    assert list(results["video"]) == ["clean", "jpeg75"]
    table = markdown_table(results)
    assert table.count("| video |") == 2
    clean = results["video"]["clean"]
    own, bicubic = clean["own refs"]["psnr"], clean["bicubic"]["psnr"]
    assert f"{own - bicubic:+.2f}" in table.splitlines()[2]
