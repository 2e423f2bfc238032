"""The aggregation's learned keys and values: added to a trained model they change nothing,
once trained they are wired into the weights and the output, masked slots still take no
part, and a run that adds them warm-starts, records and exports them."""

import pytest
import torch

from face_folders import write_faces
from tiny_run import tiny_run_config
from fsrst import FSRST
from fsrst.export import build_model, export, read_metadata
from fsrst.train import Trainer
from fsrst.variants import config_for

CHANNELS = 8
PROJECTED = {"feature_channels": CHANNELS, "reference_projections": True}
PROJECTIONS = ("lr_key", "reference_key", "reference_value")


def model(overrides, seed=0):
    torch.manual_seed(seed)
    return FSRST(config_for("fsrst_x4_small", overrides)).eval()


def trained_without_projections():
    """A model without projections whose every weight moved from its initialisation."""
    plain = model({"feature_channels": CHANNELS})
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return plain


def with_identity_projections(plain):
    projected = model(PROJECTED, seed=3)
    state = dict(projected.state_dict())
    state.update(plain.state_dict())
    projected.load_state_dict(state)
    return projected


def inputs(batch=2, k=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 32, 32, generator=gen), torch.rand(batch * k, 1, 128, 128,
                                                                   generator=gen)


def run(m, lr, refs, mask):
    with torch.no_grad():
        feats = m.encode_references(refs)
        return m.forward_with_weights(lr, feats.reshape(mask.shape[0], mask.shape[1],
                                                        *feats.shape[1:]), mask)


def moved(projected, names=PROJECTIONS):
    with torch.no_grad():
        for name in names:
            for p in getattr(projected.aggregation, name).parameters():
                p.add_(0.2 * torch.randn_like(p))
    return projected


def test_identity_projections_reproduce_the_model_without_them_exactly():
    plain = trained_without_projections()
    projected = with_identity_projections(plain)
    lr, refs = inputs()
    mask = torch.tensor([[True, True, True], [True, False, True]])
    image, weights = run(plain, lr, refs, mask)
    image_p, weights_p = run(projected, lr, refs, mask)
    assert torch.equal(image, image_p) and torch.equal(weights, weights_p)
    assert sum(p.numel() for p in projected.parameters()) == sum(
        p.numel() for p in plain.parameters()) + 3 * (CHANNELS * CHANNELS + CHANNELS)


def test_keys_move_the_weights_and_values_move_only_the_image():
    plain = trained_without_projections()
    lr, refs = inputs()
    mask = torch.ones(2, 3, dtype=torch.bool)
    image, weights = run(plain, lr, refs, mask)
    values = moved(with_identity_projections(plain), ["reference_value"])
    image_v, weights_v = run(values, lr, refs, mask)
    assert torch.equal(weights_v, weights) and (image_v - image).abs().max() > 1e-4
    for key in ("lr_key", "reference_key"):
        keys = moved(with_identity_projections(plain), [key])
        _, weights_k = run(keys, lr, refs, mask)
        assert (weights_k - weights).abs().max() > 1e-4, key


def test_with_projections_a_masked_slot_equals_fewer_references_and_never_leaks():
    projected = moved(with_identity_projections(trained_without_projections()))
    lr, refs = inputs(batch=1, k=3)
    two, w_two = run(projected, lr, refs[:2], torch.ones(1, 2, dtype=torch.bool))
    three, w_three = run(projected, lr, refs, torch.tensor([[True, True, False]]))
    torch.testing.assert_close(three, two, atol=1e-6, rtol=0)
    assert float(w_three[0, 2]) == 0.0
    poisoned = refs.clone()
    poisoned[2] = float("nan")
    leaked, _ = run(projected, lr, poisoned, torch.tensor([[True, True, False]]))
    assert torch.equal(leaked, three)
    none, w_none = run(projected, lr, refs, torch.zeros(1, 3, dtype=torch.bool))
    with torch.no_grad():
        empty = projected(lr, torch.zeros(1, 0, CHANNELS, 32, 32), torch.zeros(1, 0, dtype=torch.bool))
    torch.testing.assert_close(none, empty, atol=1e-6, rtol=0)
    assert torch.equal(w_none, torch.zeros(1, 3))


@pytest.mark.parametrize("value", [1, "true", None])
def test_the_setting_takes_only_true_or_false(value):
    with pytest.raises(ValueError, match=f"model.reference_projections: expected true or "
                                         f"false, got {value!r}"):
        config_for("fsrst_x4_small", {"reference_projections": value})


def test_feature_channels_do_not_take_a_boolean():
    with pytest.raises(ValueError, match="model.feature_channels: expected a positive integer, "
                                         "got True"):
        config_for("fsrst_x4_small", {"feature_channels": True})


def test_a_run_adds_projections_to_its_parent_and_exports_them(tmp_path, capsys):
    faces = write_faces(tmp_path / "faces", identities=2, photos=4)
    parent = trained_without_projections()
    init = str(tmp_path / "parent.pt")
    torch.save({"model": parent.state_dict(), "ema": parent.state_dict(), "step": 7,
                "samples_seen": 0, "info": {"model": {"feature_channels": CHANNELS}}}, init)
    config = tiny_run_config("fsrst_x4_small_projected", faces, PROJECTED,
                             {"checkpoint": init, "ema": True})
    trainer = Trainer(config, str(tmp_path / "configs" / "projected.yaml"))
    assert "the aggregation's new parameters start as the model initialises them " \
        "(aggregation.lr_key.weight" in capsys.readouterr().out
    for name, value in parent.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], value), name
    for name in PROJECTIONS:
        conv = getattr(trainer.model.aggregation, name)
        assert torch.equal(conv.weight.flatten(1), torch.eye(CHANNELS)), name
        assert torch.equal(conv.bias, torch.zeros(CHANNELS)), name
    trainer.train(max_minutes=5)
    checkpoint = str(tmp_path / "checkpoints" / "fsrst_x4_small_projected.pt")
    rebuilt, info = build_model("fsrst_x4_small", checkpoint)
    assert info["model"] == PROJECTED
    assert not torch.equal(rebuilt.aggregation.reference_value.weight.flatten(1),
                           torch.eye(CHANNELS))
    out = str(tmp_path / "projected_export.pt")
    export("fsrst_x4_small", out, checkpoint)
    assert read_metadata(out)["reference_projections"] is True
    scripted = torch.jit.load(out)
    lr, refs = inputs()
    mask = torch.tensor([[True, True, True], [True, False, False]])
    image, weights = run(rebuilt.eval(), lr, refs, mask)
    image_s, weights_s = run(scripted, lr, refs, mask)
    torch.testing.assert_close(image_s, image, atol=1e-5, rtol=0)
    torch.testing.assert_close(weights_s, weights, atol=1e-6, rtol=0)
