"""The aggregation's local search: it finds a reference pixel next to where the aligner put
it, starts near the model without it, keeps masked slots out, and a run adds it to a parent
and exports it."""

import pytest
import torch

from face_folders import write_faces
from tiny_run import tiny_run_config
from fsrst import FSRST
from fsrst.distance_aggregation import DistanceAggregation
from fsrst.export import export, read_metadata
from fsrst.local_search_aggregation import INITIAL_SHIFT_PENALTY, LocalSearchAggregation
from fsrst.train import Trainer
from fsrst.variants import config_for

SEARCH = {"feature_channels": 8, "reference_search_radius": 1}


def pattern(seed=0, channels=4, size=8):
    return torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_a_reference_one_pixel_off_is_found():
    lr = pattern()
    reference = torch.roll(lr, shifts=1, dims=3)[:, None]  # one pixel to the right
    mask = torch.ones(1, 1, dtype=torch.bool)
    plain = DistanceAggregation(4)
    search = LocalSearchAggregation(1, 4)
    with torch.no_grad():
        search.shift_penalty.zero_()
        _, plain_weight = plain.fuse(lr, reference, mask)
        fused, weight = search.fuse(lr, reference, mask)
    inner = (slice(None), slice(None), slice(None), slice(1, -1), slice(1, -1))
    # Inside the border the shifted copy matches exactly: distance 0, so the reference takes
    # 1 / (1 + exp(-T)) of the aggregation, more than the unshifted plain one gets anywhere.
    expected = 1.0 / (1.0 + float(torch.exp(-search.threshold)))
    assert float(weight[inner].min()) >= expected - 1e-6
    assert float(plain_weight[inner].max()) < float(weight[inner].min())
    assert fused.shape == lr.shape


def test_with_every_shift_penalised_away_it_is_the_plain_aggregation():
    torch.manual_seed(0)
    plain = FSRST(config_for("fsrst_x4_small", {"feature_channels": 8})).eval()
    search = FSRST(config_for("fsrst_x4_small", SEARCH)).eval()
    state = dict(plain.state_dict())
    penalty = torch.full((9,), 100.0)
    penalty[4] = 0.0
    state["aggregation.shift_penalty"] = penalty
    search.load_state_dict(state)
    gen = torch.Generator().manual_seed(1)
    lr, refs = torch.rand(2, 3, 32, 32, generator=gen), torch.rand(6, 1, 128, 128, generator=gen)
    mask = torch.tensor([[True, True, True], [True, False, True]])
    with torch.no_grad():
        feats = plain.encode_references(refs).reshape(2, 3, 8, 32, 32)
        image, weights = plain.forward_with_weights(lr, feats, mask)
        image_s, weights_s = search.forward_with_weights(lr, feats, mask)
        # At the initial penalty the shifted candidates take a little weight, not none.
        search.aggregation.shift_penalty.copy_(torch.where(penalty > 0, INITIAL_SHIFT_PENALTY,
                                                           0.0))
        image_i, _ = search.forward_with_weights(lr, feats, mask)
    torch.testing.assert_close(image_s, image, atol=1e-6, rtol=0)
    torch.testing.assert_close(weights_s, weights, atol=1e-6, rtol=0)
    assert 1e-5 < float((image_i - image).abs().max()) < 0.05


def test_with_the_search_a_masked_slot_equals_fewer_references_and_never_leaks():
    torch.manual_seed(0)
    model = FSRST(config_for("fsrst_x4_small", SEARCH)).eval()
    gen = torch.Generator().manual_seed(2)
    lr, refs = torch.rand(1, 3, 32, 32, generator=gen), torch.rand(3, 1, 128, 128, generator=gen)
    with torch.no_grad():
        feats = model.encode_references(refs)[None]
        two, w_two = model.forward_with_weights(lr, feats[:, :2], torch.ones(1, 2, dtype=torch.bool))
        masked = torch.tensor([[True, True, False]])
        three, w_three = model.forward_with_weights(lr, feats, masked)
        poisoned = feats.clone()
        poisoned[0, 2] = float("nan")
        leaked, _ = model.forward_with_weights(lr, poisoned, masked)
    torch.testing.assert_close(three, two, atol=1e-6, rtol=0)
    assert float(w_three[0, 2]) == 0.0 and torch.equal(leaked, three)
    assert 0.0 < float(w_three.sum()) < 1.0


@pytest.mark.parametrize("value", [4, -1, True, 1.0])
def test_the_radius_is_a_whole_number_from_0_to_3(value):
    with pytest.raises(ValueError, match="model.reference_search_radius: expected a whole "
                                         "number from 0 to 3, got"):
        config_for("fsrst_x4_small", {"reference_search_radius": value})


def test_a_run_adds_the_search_to_its_parent_and_exports_it(tmp_path, capsys):
    faces = write_faces(tmp_path / "faces", identities=2, photos=4)
    torch.manual_seed(0)
    parent = FSRST(config_for("fsrst_x4_small", {"feature_channels": 8}))
    init = str(tmp_path / "parent.pt")
    torch.save({"model": parent.state_dict(), "ema": parent.state_dict(), "step": 3,
                "samples_seen": 0, "info": {"model": {"feature_channels": 8}}}, init)
    config = tiny_run_config("fsrst_x4_small_search", faces, SEARCH,
                             {"checkpoint": init, "ema": True})
    trainer = Trainer(config, str(tmp_path / "configs" / "search.yaml"))
    assert "(aggregation.shift_penalty)" in capsys.readouterr().out
    start = trainer.model.aggregation.shift_penalty
    assert float(start[4]) == 0.0 and float(start.max()) == INITIAL_SHIFT_PENALTY
    trainer.train(max_minutes=5)
    out = str(tmp_path / "search_export.pt")
    export("fsrst_x4_small", out, str(tmp_path / "checkpoints" / "fsrst_x4_small_search.pt"))
    assert read_metadata(out)["training"]["model"] == SEARCH
