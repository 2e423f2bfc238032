"""RGB references: the setting, the data in both forms, a warm start from a luma model that
starts at its output, and a run that trains, records and exports the shape."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from face_folders import write_clips, write_faces
from tiny_run import tiny_run_config
from fsrst import FSRST
from fsrst.evaluate import reference_channels_of
from fsrst.export import export, read_metadata
from fsrst.face_data import evaluation_samples, luma, reference_tensor, to_tensor
from fsrst.reference_colour import colour_state
from fsrst.train import Trainer, video_validation_sets
from fsrst.training_mix import TrainingMix
from fsrst.variants import config_for

TESTDATA = os.path.join(os.path.dirname(__file__), "testdata")
RGB = {"feature_channels": 8, "reference_channels": 3}


def models():
    """A luma model whose weights moved from their initialisation, and an RGB model started
    from it by colour_state."""
    torch.manual_seed(0)
    luma_model = FSRST(config_for("fsrst_x4_small", {"feature_channels": 8})).eval()
    with torch.no_grad():
        for p in luma_model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    rgb_model = FSRST(config_for("fsrst_x4_small", RGB)).eval()
    rgb_model.load_state_dict(colour_state(luma_model.state_dict(), rgb_model))
    return luma_model, rgb_model


def images(seed, grey):
    rng = np.random.default_rng(seed)
    shape = (128, 128, 1) if grey else (128, 128, 3)
    pixels = rng.integers(0, 256, shape).astype(np.uint8)
    return [Image.fromarray(np.repeat(pixels, 3, axis=2) if grey else pixels)]


def outputs(model, refs, channels):
    lr = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    tensors = torch.stack([reference_tensor(r, channels) for r in refs])
    with torch.no_grad():
        feats = model.encode_references(tensors).unsqueeze(0)
        return model.forward_with_weights(lr, feats, torch.ones(1, len(refs), dtype=torch.bool))


def test_an_rgb_model_starts_at_the_luma_models_output():
    luma_model, rgb_model = models()
    # Grey references: their luma is exact in 8 bits, so the two models differ by float
    # rounding only (the first convolution sums 48 products instead of 16; about 2e-4 at the
    # output of these random weights).
    grey = images(0, grey=True) + images(1, grey=True)
    for a, b in zip(outputs(luma_model, grey, 1), outputs(rgb_model, grey, 3)):
        torch.testing.assert_close(b, a, atol=5e-4, rtol=0)
    # Coloured ones: PIL rounds their luma to 8 bits, the RGB model does not.
    colour = images(2, grey=False) + images(3, grey=False)
    image, _ = outputs(luma_model, colour, 1)
    image_rgb, _ = outputs(rgb_model, colour, 3)
    assert (image_rgb - image).abs().max() < 2e-3


def test_colour_state_needs_three_times_the_reference_channels():
    luma_model, _ = models()
    other = FSRST(config_for("fsrst_x4_small", {"feature_channels": 8}))
    with pytest.raises(ValueError, match="reference input has 16 channels and the checkpoint's "
                                         "16; expected 3 times as many"):
        colour_state(luma_model.state_dict(), other)


def test_encode_references_names_the_channels_it_takes():
    _, rgb_model = models()
    with pytest.raises(ValueError, match=r"refs must be \[N, 3, 128, 128\] RGB"):
        rgb_model.encode_references(torch.zeros(2, 1, 128, 128))
    assert rgb_model.reference_shape() == [3, 128, 128]


@pytest.mark.parametrize("value", [2, 0, True, "3", 3.0])
def test_the_setting_takes_1_or_3(value):
    with pytest.raises(ValueError, match=r"model.reference_channels: expected 1 \(luma\) or 3 "
                                         r"\(RGB\), got"):
        config_for("fsrst_x4_small", {"reference_channels": value})


def test_a_reference_is_luma_or_rgb():
    image = images(4, grey=False)[0]
    assert torch.equal(reference_tensor(image, 1), to_tensor(luma(image)))
    assert torch.equal(reference_tensor(image, 3), to_tensor(image))
    with pytest.raises(ValueError, match=r"expected 1 \(luma\) or 3 \(RGB\), got 2"):
        reference_tensor(image, 2)


def test_a_file_exported_before_the_setting_takes_luma():
    old = torch.jit.load(os.path.join(TESTDATA, "fsrst_x4_before_weights_method.pt"))
    assert not hasattr(old, "reference_shape") and reference_channels_of(old) == 1


def test_the_frame_conditions_study_rows_are_refused_with_rgb_references(tmp_path):
    with pytest.raises(ValueError, match="log.validate_video_conditions: .* expected no "
                                         "conditions with model.reference_channels 3"):
        video_validation_sets(str(tmp_path), ["blur2"], reference_channels=3)


def test_a_run_with_rgb_references_from_a_luma_parent_trains_and_exports(tmp_path):
    faces = write_faces(tmp_path / "faces", identities=2, photos=4)
    clips = write_clips(tmp_path / "clips")
    luma_model, rgb_start = models()
    init = str(tmp_path / "parent.pt")
    torch.save({"model": luma_model.state_dict(), "ema": luma_model.state_dict(), "step": 5,
                "samples_seen": 0, "info": {"model": {"feature_channels": 8}}}, init)
    config = tiny_run_config("fsrst_x4_small_colour", faces, RGB,
                             {"checkpoint": init, "ema": True, "colour": True},
                             video_train=clips, video_val=clips, video_fraction=0.5)
    trainer = Trainer(config, str(tmp_path / "configs" / "colour.yaml"))
    for name, value in rgb_start.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], value), name
    assert trainer.val_samples[0][1].shape[1] == 3
    assert trainer.video_val_sets["video_q75"][0][1].shape[1] == 3
    mix = TrainingMix(faces, clips, config["data"], seed=1, reference_channels=3)
    assert mix[0][1].shape[1:] == (3, 128, 128) and mix[1][1].shape[1:] == (3, 128, 128)
    trainer.train(max_minutes=5)
    out = str(tmp_path / "colour_export.pt")
    export("fsrst_x4_small", out, str(tmp_path / "checkpoints" / "fsrst_x4_small_colour.pt"))
    assert read_metadata(out)["reference_shape"] == [3, 128, 128]
    assert reference_channels_of(torch.jit.load(out)) == 3
    assert evaluation_samples(faces, reference_channels=3)[0][1].shape == (3, 3, 128, 128)
