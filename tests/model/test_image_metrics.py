"""PSNR and SSIM against values worked out by hand, and the shipped weights against bicubic."""

import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from fsrst.evaluate import bicubic_upscale, protocol_samples, with_condition
from fsrst.image_metrics import psnr, psnr_of_images, ssim

WEIGHTS = os.path.join(os.path.dirname(__file__), "..", "..", "model", "weights")
FACES_VAL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "faces",
                         "val")


def levels(values):
    return torch.tensor(values, dtype=torch.float32) / 255.0


def test_psnr_of_a_constant_error_of_5_levels():
    target = levels([[[[10, 100], [200, 250]]] * 3])          # [1,3,2,2]
    prediction = target + 5 / 255.0
    # MSE = 25 -> PSNR = 10 log10(255^2 / 25) = 34.151 dB; the last pixel clips at 255,
    # so its error is 5 too (250 + 5 = 255).
    assert float(psnr(prediction, target)) == pytest.approx(10 * math.log10(255 ** 2 / 25),
                                                            abs=1e-4)


def test_psnr_of_uint8_images_is_psnr_of_their_levels():
    target = np.array([[[10, 100, 200], [250, 0, 30]]], np.uint8)      # 1x2 pixels, RGB
    prediction = target + np.array([[[5, 0, 0], [0, 0, 0]]], np.uint8)
    # One of six values 5 levels off: MSE = 25 / 6.
    expected = 10 * math.log10(255 ** 2 / (25 / 6))
    assert psnr_of_images(prediction, target) == pytest.approx(expected, abs=1e-4)
    assert psnr_of_images(Image.fromarray(prediction), Image.fromarray(target)) == \
        pytest.approx(expected, abs=1e-4)


def test_psnr_counts_uint8_levels_not_floats():
    target = levels([[[[100]]] * 3])
    # 0.4 levels round away: no error, PSNR at its cap (MSE floored at 1e-10).
    assert float(psnr(target + 0.4 / 255.0, target)) == pytest.approx(
        10 * math.log10(255 ** 2 / 1e-10))
    # One level off in one of four pixels: MSE = 1/4 -> 54.15 dB.
    prediction = levels([[[[100, 100], [100, 101]]] * 3])
    assert float(psnr(prediction, levels([[[[100, 100], [100, 100]]] * 3]))) == pytest.approx(
        10 * math.log10(255 ** 2 / 0.25), abs=1e-4)


def test_ssim_of_two_flat_images_is_the_luminance_term():
    """Flat images have no variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1)."""
    a, b = 100.0, 120.0
    x = torch.full((1, 3, 16, 16), a / 255.0)
    y = torch.full((1, 3, 16, 16), b / 255.0)
    c1 = (0.01 * 255) ** 2
    assert float(ssim(x, y)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-6)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-6)


def test_ssim_falls_with_noise():
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 32, 32, generator=gen)
    small = (image + 0.02 * torch.randn(image.shape, generator=gen)).clamp(0, 1)
    large = (image + 0.2 * torch.randn(image.shape, generator=gen)).clamp(0, 1)
    assert 1.0 > float(ssim(small, image)) > float(ssim(large, image)) > 0.0


# The first 8 faces of faces/val: each shipped file must beat bicubic of the same frame by
# these margins (full val: +3.0 dB clean for both files when this was written). Random or
# barely trained weights score below bicubic.
MARGIN_DB = {"clean": 2.0}


@pytest.mark.skipif(not os.path.isdir(FACES_VAL), reason="shared/data/faces/val not present")
@pytest.mark.parametrize("variant", ["fsrst_x4", "fsrst_x4_small"])
@pytest.mark.parametrize("condition", sorted(MARGIN_DB))
def test_shipped_weights_beat_bicubic_on_val_faces(variant, condition):
    module = torch.jit.load(os.path.join(WEIGHTS, variant + ".pt"), map_location="cpu")
    samples, _ = protocol_samples(FACES_VAL)
    samples = with_condition(samples[:8], condition)
    lr = torch.stack([s[0] for s in samples])
    refs = torch.stack([s[1] for s in samples])
    hr = torch.stack([s[2] for s in samples])
    with torch.no_grad():
        feats = module.encode_references(refs.flatten(0, 1)).unflatten(0, refs.shape[:2])
        out = module(lr, feats, torch.ones(refs.shape[:2], dtype=torch.bool))
    gain = float(psnr(out, hr).mean() - psnr(bicubic_upscale(lr, 4), hr).mean())
    assert gain >= MARGIN_DB[condition], gain
