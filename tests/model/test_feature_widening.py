"""Widening the feature channels: a widened model starts where the narrow one was, a run
records its shape, and export and evaluation rebuild that shape from the checkpoint."""

import pytest
import torch

from face_folders import write_faces
from tiny_run import tiny_run_config
from fsrst import FSRST
from fsrst.export import build_model, export, read_metadata
from fsrst.feature_widening import widen_state
from fsrst.train import Trainer
from fsrst.variants import config_for


def inputs(seed=0, feature_channels=3):
    gen = torch.Generator().manual_seed(seed)
    lr = torch.rand(2, 3, 32, 32, generator=gen)
    refs = torch.rand(6, 1, 128, 128, generator=gen)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    return lr, refs, mask


def run(model, lr, refs, mask):
    feats = model.encode_references(refs)
    return model(lr, feats.reshape(2, 3, *feats.shape[1:]), mask)


def test_a_widened_model_starts_at_the_narrow_models_output():
    torch.manual_seed(0)
    narrow = FSRST(config_for("fsrst_x4_small")).eval()
    # Move every weight away from its initialisation, so the test sees copied values.
    with torch.no_grad():
        for p in narrow.parameters():
            p.add_(0.01 * torch.randn_like(p))
    wide = FSRST(config_for("fsrst_x4_small", {"feature_channels": 16})).eval()
    wide.load_state_dict(widen_state(narrow.state_dict(), wide, torch.Generator().manual_seed(1)))
    with torch.no_grad():
        a, b = run(narrow, *inputs()), run(wide, *inputs())
    assert wide.feature_shape() == [16, 32, 32]
    assert (a - b).abs().max() < 0.01
    # The new channels carry a signal from the start (else they could never learn).
    assert wide.reference_extractor.tail.weight[3:].abs().sum() > 0
    assert torch.equal(wide.constructor.head.weight[:, 3:], torch.zeros_like(
        wide.constructor.head.weight[:, 3:]))


def test_widening_refuses_a_narrower_model_and_other_shape_changes():
    wide = FSRST(config_for("fsrst_x4_small", {"feature_channels": 16}))
    narrow = FSRST(config_for("fsrst_x4_small"))
    with pytest.raises(ValueError, match="fewer than the checkpoint's 16"):
        widen_state(wide.state_dict(), narrow, torch.Generator())
    other = FSRST(config_for("fsrst_x4", {"feature_channels": 16}))
    with pytest.raises(ValueError, match="only the feature channels may differ"):
        widen_state(narrow.state_dict(), other, torch.Generator())


@pytest.mark.parametrize("overrides, message", [
    ({"num_channels": 8}, r"model.num_channels: expected one of \['feature_channels', "
                          r"'reference_projections', 'reference_channels', "
                          r"'reference_search_radius'\]"),
    ({"feature_channels": 0}, "model.feature_channels: expected a positive integer, got 0"),
    ({"feature_channels": "16"}, "model.feature_channels: expected a positive integer"),
])
def test_model_overrides_name_the_setting(overrides, message):
    with pytest.raises(ValueError, match=message):
        config_for("fsrst_x4_small", overrides)


def test_a_widened_run_exports_with_its_shape(tmp_path):
    faces = write_faces(tmp_path / "faces", identities=2, photos=4)
    torch.manual_seed(0)
    narrow = FSRST(config_for("fsrst_x4_small"))
    init = str(tmp_path / "narrow.pt")
    torch.save({"model": narrow.state_dict(), "step": 7, "samples_seen": 0, "info": {}}, init)
    config = tiny_run_config("fsrst_x4_small_wide", faces, {"feature_channels": 8},
                             {"checkpoint": init, "widen": True})
    Trainer(config, str(tmp_path / "configs" / "wide.yaml")).train(max_minutes=5)
    checkpoint = str(tmp_path / "checkpoints" / "fsrst_x4_small_wide.pt")
    model, info = build_model("fsrst_x4_small", checkpoint)
    assert info["model"] == {"feature_channels": 8} and model.feature_shape() == [8, 32, 32]
    out = str(tmp_path / "wide_export.pt")
    export("fsrst_x4_small", out, checkpoint)
    assert read_metadata(out)["feature_shape"] == [8, 32, 32]
