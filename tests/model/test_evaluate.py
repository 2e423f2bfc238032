"""The evaluation command: its other-person reference row and its table of rows."""

import pytest
import torch

from face_folders import write_faces
from fsrst import FSRST
from fsrst.evaluate import evaluate, other_identity_references
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
    assert list(rows) == ["bicubic", "fsrst (3 refs)", "fsrst (no refs)",
                          "fsrst (another person's 3 refs)"]
    for name, row in rows.items():
        assert row["images"] == 8, name
        assert 5.0 < row["psnr"] < 60.0, (name, row)
        assert 0.0 < row["ssim"] <= 1.0, (name, row)
    # An untrained model's aligner starts at identity, so references reach the output.
    assert rows["fsrst (3 refs)"]["psnr"] != rows["fsrst (another person's 3 refs)"]["psnr"]
