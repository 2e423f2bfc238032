"""The model contract: shapes, masking, independence, export fidelity, metadata."""

import json
import os

import pytest
import torch

from fsrst import FSRST
from fsrst.distance_aggregation import DistanceAggregation
from fsrst.fsrst_net import LEGACY_THRESHOLD, load_weights
from fsrst.export import METADATA_FILE, check_faithful, export, read_metadata
from fsrst.spatial_transformer import SpatialTransformer
from fsrst.variants import config_for

WEIGHTS = os.path.join(os.path.dirname(__file__), "..", "..", "model", "weights")


def make(variant="fsrst_x4_small", seed=0):
    torch.manual_seed(seed)
    return FSRST(config_for(variant)).eval()


def inputs(batch=2, k=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    lr = torch.rand(batch, 3, 32, 32, generator=gen)
    refs = torch.rand(batch * k, 1, 128, 128, generator=gen)
    return lr, refs


def encode(model, refs, batch, k):
    with torch.no_grad():
        return model.encode_references(refs).reshape(batch, k, 3, 32, 32)


@pytest.mark.parametrize("variant,count", [("fsrst_x4", 2_552_577), ("fsrst_x4_small", 869_793)])
def test_parameter_count(variant, count):
    assert sum(p.numel() for p in make(variant).parameters()) == count


def test_output_shape_and_range():
    model = make()
    lr, refs = inputs()
    feats = encode(model, refs, 2, 3)
    # Push the residual far out of range so the clamp has work to do.
    with torch.no_grad():
        model.constructor.tail.bias.fill_(3.0)
        out = model(lr, feats, torch.ones(2, 3, dtype=torch.bool))
    assert out.shape == (2, 3, 128, 128)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out.max()) == 1.0


def test_masked_slot_equals_fewer_references():
    model = make()
    lr, refs = inputs(batch=1, k=3)
    feats = encode(model, refs, 1, 3)
    with torch.no_grad():
        two = model(lr, feats[:, :2], torch.ones(1, 2, dtype=torch.bool))
        three_masked = model(lr, feats, torch.tensor([[True, True, False]]))
        three = model(lr, feats, torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(three_masked, two, atol=1e-5, rtol=0)
    # The third reference does matter when it is not masked.
    assert float((three - two).abs().max()) > 1e-4


def test_masked_slot_content_does_not_leak():
    model = make()
    lr, refs = inputs(batch=1, k=3)
    feats = encode(model, refs, 1, 3)
    mask = torch.tensor([[True, False, True]])
    poisoned = feats.clone()
    poisoned[:, 1] = float("nan")
    shuffled = feats.clone()
    shuffled[:, 1] = torch.randn_like(feats[:, 1]) * 50
    with torch.no_grad():
        base = model(lr, feats, mask)
        assert torch.equal(model(lr, shuffled, mask), base)
        assert torch.equal(model(lr, poisoned, mask), base)


def test_the_none_slot_takes_weight_from_references_that_match_nothing():
    aggregation = DistanceAggregation(initial_threshold=1.0)
    lr_feat = torch.zeros(1, 3, 4, 4)
    near = torch.full((1, 1, 3, 4, 4), 0.1)    # distance 0.1 * sqrt(3)
    far = torch.full((1, 1, 3, 4, 4), 3.0)     # distance 3 * sqrt(3)
    mask = torch.ones(1, 1, dtype=torch.bool)
    with torch.no_grad():
        w_near = aggregation.weights(lr_feat, near, mask)
        w_far = aggregation.weights(lr_feat, far, mask)
    e = torch.exp(torch.tensor(-1.0))
    expected_near = torch.exp(-0.1 * torch.tensor(3.0).sqrt())
    assert torch.allclose(w_near, expected_near / (expected_near + e))
    expected_far = torch.exp(-3.0 * torch.tensor(3.0).sqrt())
    assert torch.allclose(w_far, expected_far / (expected_far + e))
    assert float(w_far.max()) < 0.02 < 0.6 < float(w_near.min())


def test_weights_saved_before_the_threshold_behave_as_they_did():
    """Old checkpoints had a normaliser eps of 1e-9 where exp(-threshold) is now."""
    old = make()
    state = {k: v for k, v in old.state_dict().items() if k != "aggregation.threshold"}
    model = make(seed=5)
    load_weights(model, state)
    assert float(model.aggregation.threshold) == pytest.approx(LEGACY_THRESHOLD)
    assert float(torch.exp(-model.aggregation.threshold)) == pytest.approx(1e-9, rel=1e-3)
    for name, value in old.state_dict().items():
        if name != "aggregation.threshold":
            assert torch.equal(model.state_dict()[name], value), name


def test_all_masked_equals_no_references():
    model = make()
    lr, refs = inputs(batch=2, k=3)
    feats = encode(model, refs, 2, 3)
    with torch.no_grad():
        none = model(lr, torch.zeros(2, 0, 3, 32, 32), torch.zeros(2, 0, dtype=torch.bool))
        masked = model(lr, feats, torch.zeros(2, 3, dtype=torch.bool))
    torch.testing.assert_close(masked, none, atol=1e-6, rtol=0)


def test_batch_items_are_independent():
    model = make()
    lr, refs = inputs(batch=3, k=2)
    feats = encode(model, refs, 3, 2)
    mask = torch.tensor([[True, True], [True, False], [False, False]])
    with torch.no_grad():
        batched = model(lr, feats, mask)
        for i in range(3):
            alone = model(lr[i:i + 1], feats[i:i + 1], mask[i:i + 1])
            torch.testing.assert_close(batched[i:i + 1], alone, atol=1e-5, rtol=0)
        # Changing another item changes nothing for item 0.
        other = lr.clone()
        other[1:] = torch.rand_like(other[1:])
        torch.testing.assert_close(model(other, feats, mask)[0], batched[0], atol=1e-5, rtol=0)


def test_identity_initialised_alignment_returns_reference():
    torch.manual_seed(0)
    aligner = SpatialTransformer().eval()
    lr_feat = torch.randn(4, 3, 32, 32)
    ref_feat = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(aligner(lr_feat, ref_feat), ref_feat, atol=1e-5, rtol=0)


def test_references_change_the_output():
    model = make()
    lr, refs = inputs(batch=1, k=3)
    feats = encode(model, refs, 1, 3)
    with torch.no_grad():
        with_refs = model(lr, feats, torch.ones(1, 3, dtype=torch.bool))
        without = model(lr, feats[:, :0], torch.zeros(1, 0, dtype=torch.bool))
    assert float((with_refs - without).abs().max()) > 1e-4


@pytest.mark.parametrize("bad,match", [
    (lambda lr, f, m: (lr[:, :2], f, m), r"lr must be \[B, 3, 32, 32\]"),
    (lambda lr, f, m: (torch.rand(2, 3, 16, 16), f, m), r"lr must be \[B, 3, 32, 32\]"),
    (lambda lr, f, m: (lr, f[:1], m), r"ref_feats must be \[2, K, 3, 32, 32\]"),
    (lambda lr, f, m: (lr, f[:, :, :, :16], m), r"ref_feats must be"),
    (lambda lr, f, m: (lr, f, m[:, :2]), r"ref_mask must be bool \[2, 3\]"),
    (lambda lr, f, m: (lr, f, m.float()), r"ref_mask must be bool"),
])
def test_wrong_shapes_give_clear_errors(bad, match):
    model = make()
    scripted = torch.jit.script(model)
    lr, refs = inputs()
    feats = encode(model, refs, 2, 3)
    args = bad(lr, feats, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=match):
        model(*args)
    with pytest.raises(torch.jit.Error, match=match):
        scripted(*args)


def test_encode_references_rejects_wrong_shape():
    model = torch.jit.script(make())
    with pytest.raises(torch.jit.Error, match=r"refs must be \[N, 1, 128, 128\]"):
        model.encode_references(torch.rand(2, 3, 128, 128))


@pytest.mark.parametrize("variant", ["fsrst_x4", "fsrst_x4_small"])
def test_export_is_faithful_and_carries_metadata(tmp_path, variant):
    path = str(tmp_path / f"{variant}.pt")
    metadata = export(variant, path)
    assert read_metadata(path) == metadata
    assert metadata["lr_size"] == 32 and metadata["scale"] == 4
    assert metadata["reference_size"] == 128 and metadata["feature_shape"] == [3, 32, 32]
    assert metadata["max_references"] == 8 and metadata["trained"] is False
    model = make(variant)
    reloaded = torch.jit.load(path)
    assert check_faithful(model, reloaded) <= 1e-5


@pytest.mark.parametrize("variant", ["fsrst_x4", "fsrst_x4_small"])
def test_shipped_weights_load_with_metadata(variant):
    path = os.path.join(WEIGHTS, variant + ".pt")
    extra = {METADATA_FILE: ""}
    module = torch.jit.load(path, _extra_files=extra)
    metadata = json.loads(extra[METADATA_FILE])
    assert metadata["name"] == variant
    feats = module.encode_references(torch.rand(2, 1, 128, 128))
    assert list(feats.shape[1:]) == metadata["feature_shape"]
    out = module(torch.rand(1, 3, 32, 32), feats[None], torch.ones(1, 2, dtype=torch.bool))
    assert out.shape == (1, 3, 128, 128)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    model = make()
    lr, refs = inputs()
    with torch.no_grad():
        cpu = model(lr, encode(model, refs, 2, 3), torch.ones(2, 3, dtype=torch.bool))
        gpu_model = model.cuda()
        gpu = gpu_model(lr.cuda(), encode(gpu_model, refs.cuda(), 2, 3),
                        torch.ones(2, 3, dtype=torch.bool, device="cuda"))
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)


def test_forward_with_weights_gives_forwards_image_and_one_weight_per_reference():
    model = make()
    lr, refs = inputs(batch=3, k=3)
    feats = encode(model, refs, 3, 3)
    mask = torch.tensor([[True, True, True], [True, False, True], [False, False, False]])
    with torch.no_grad():
        image, weights = model.forward_with_weights(lr, feats, mask)
        assert torch.equal(image, model(lr, feats, mask))
        # By hand: the aggregation's per-pixel weights, averaged over the frame.
        lr_feat = model.lr_extractor(lr)
        aligned = model.aligner(lr_feat.repeat_interleave(3, 0), feats.flatten(0, 1) * mask.reshape(
            9, 1, 1, 1)).reshape(feats.shape)
        expected = model.aggregation.weights(lr_feat, aligned, mask).mean(dim=(2, 3, 4))
    assert weights.shape == (3, 3)
    torch.testing.assert_close(weights, expected, atol=1e-6, rtol=0)
    assert weights[1, 1] == 0 and torch.equal(weights[2], torch.zeros(3))  # masked: exactly 0
    assert bool((weights >= 0).all()) and bool((weights.sum(dim=1) < 1).all())


def test_forward_with_weights_without_references_is_an_empty_row():
    model = make()
    lr, _ = inputs(batch=2, k=1)
    with torch.no_grad():
        image, weights = model.forward_with_weights(lr, torch.zeros(2, 0, 3, 32, 32),
                                                    torch.zeros(2, 0, dtype=torch.bool))
    assert weights.shape == (2, 0) and image.shape == (2, 3, 128, 128)


def test_scripted_forward_with_weights_matches_eager(tmp_path):
    model = make()
    path = str(tmp_path / "m.pt")
    export("fsrst_x4_small", path)
    scripted = torch.jit.load(path)
    lr, refs = inputs(batch=2, k=2)
    feats = encode(model, refs, 2, 2)
    mask = torch.tensor([[True, False], [True, True]])
    with torch.no_grad():
        eager = model.forward_with_weights(lr, feats, mask)
        script = scripted.forward_with_weights(lr, feats, mask)
    for a, b in zip(eager, script):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
