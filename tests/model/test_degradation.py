"""The frame conditions callers' frames arrive in: JPEG, named conditions, training draws."""

import random

import numpy as np
import pytest
from PIL import Image

from fsrst.degradation import (DegradationConfig, apply_condition, degraded_lr, jpeg,
                               parse_condition)


def photo(seed=0, size=32):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def levels(image):
    return np.asarray(image, dtype=np.float64)


def test_lower_jpeg_quality_loses_more():
    image = photo()
    errors = [np.abs(levels(jpeg(image, q)) - levels(image)).mean() for q in (95, 75, 30)]
    assert 0 < errors[0] < errors[1] < errors[2], errors


def test_chroma_subsampling_is_what_the_name_says():
    """4:4:4 keeps colour detail that 4:2:0 averages over 2x2 blocks."""
    image = photo(1)
    full = np.abs(levels(jpeg(image, 95, "4:4:4")) - levels(image)).mean()
    half = np.abs(levels(jpeg(image, 95, "4:2:0")) - levels(image)).mean()
    assert full < half


@pytest.mark.parametrize("name,expected", [
    ("clean", ("clean", 0, "")), ("jpeg75", ("jpeg", 75, "4:2:0")),
    ("jpeg75_420", ("jpeg", 75, "4:2:0")), ("jpeg90_444", ("jpeg", 90, "4:4:4")),
    ("jpeg1_422", ("jpeg", 1, "4:2:2"))])
def test_condition_names(name, expected):
    assert parse_condition(name) == expected


@pytest.mark.parametrize("name", ["jpeg", "jpeg0", "jpeg101", "jpeg75_411", "png", "JPEG75"])
def test_bad_condition_names_say_what_is_expected(name):
    with pytest.raises(ValueError, match=r"expected 'clean' or 'jpeg<1..100>"):
        parse_condition(name)


def test_clean_condition_is_the_frame_itself():
    image = photo(2)
    assert apply_condition(image, "clean") is image
    assert np.array_equal(levels(apply_condition(image, "jpeg50")), levels(jpeg(image, 50)))


def test_training_draws_are_reproducible_and_clean_is_pil_bicubic():
    hr = photo(3, size=128)
    config = DegradationConfig.from_dict({"clean_fraction": 0.0, "noise_probability": 1.0,
                                          "noise_sigma_max": 3.0, "jpeg_quality": [40, 60]})
    a = degraded_lr(hr, 4, random.Random(7), config)
    b = degraded_lr(hr, 4, random.Random(7), config)
    assert a.size == (32, 32) and np.array_equal(levels(a), levels(b))
    clean = degraded_lr(hr, 4, random.Random(7), DegradationConfig(clean_fraction=1.0))
    assert np.array_equal(levels(clean), levels(hr.resize((32, 32), Image.BICUBIC)))
    assert not np.array_equal(levels(a), levels(clean))


@pytest.mark.parametrize("section,match", [
    ({"jpeg_quality": [0, 90]}, r"degrade.jpeg_quality: expected \[min, max\] within 1..100"),
    ({"jpeg_quality": [90, 30]}, r"degrade.jpeg_quality"),
    ({"downscale_filters": ["nearest"]}, r"degrade.downscale_filters: expected names from"),
    ({"chroma_subsampling": {"4:1:1": 1.0}}, r"degrade.chroma_subsampling: expected names"),
    ({"blur_probability": 1.5}, r"degrade.blur_probability: expected a probability in \[0, 1\]"),
    ({"h264_probability": -0.1}, r"degrade.h264_probability: expected a probability"),
    ({"blur_radius_max": -1.0}, r"degrade.blur_radius_max, noise_sigma_max: expected >= 0"),
    ({"h264_probability": 0.5}, r"degrade.h264_crfs: expected at least one CRF"),
    ({"h264_probability": 0.5, "h264_crfs": [28, 52]},
     r"degrade.h264_crfs: expected integers 0..51, got 52"),
    ({"h264_crfs": [28.5]}, r"degrade.h264_crfs: expected integers 0..51, got 28.5")])
def test_bad_training_settings_name_the_setting(section, match):
    with pytest.raises(ValueError, match=match):
        DegradationConfig.from_dict(section)


def test_blur_softens_the_frame_before_it_is_made_small():
    hr = photo(2, size=128)
    config = DegradationConfig(clean_fraction=0.0, jpeg_probability=0.0, blur_probability=1.0,
                               blur_radius_max=2.0)
    sharp = DegradationConfig(clean_fraction=0.0, jpeg_probability=0.0)
    blurred_lr = levels(degraded_lr(hr, 4, random.Random(3), config))
    sharp_lr = levels(degraded_lr(hr, 4, random.Random(3), sharp))
    # Noise pixels: a soft camera averages them, so the small frame has less contrast.
    assert blurred_lr.std() < sharp_lr.std()
    again = levels(degraded_lr(hr, 4, random.Random(3), config))
    assert np.array_equal(blurred_lr, again)

