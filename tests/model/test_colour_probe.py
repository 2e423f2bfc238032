"""The colour probe: the colour space round trip, the swap of luma and chroma, and its rows."""

import torch

from face_folders import write_clips
from fsrst import FSRST
from fsrst.colour_probe import ROWS, probe, to_rgb, to_ycbcr, with_luma_of
from fsrst.evaluate import video_protocol_samples, with_condition
from fsrst.image_metrics import psnr
from fsrst.variants import config_for


def test_ycbcr_round_trip_and_the_luma_of_grey():
    rgb = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(to_rgb(to_ycbcr(rgb)), rgb, atol=1e-6, rtol=0)
    grey = torch.full((1, 3, 2, 2), 0.4)
    ycbcr = to_ycbcr(grey)
    torch.testing.assert_close(ycbcr[:, 0], torch.full((1, 2, 2), 0.4))
    torch.testing.assert_close(ycbcr[:, 1:], torch.zeros(1, 2, 2, 2), atol=1e-7, rtol=0)


def test_with_luma_of_takes_luma_from_one_and_chroma_from_the_other():
    gen = torch.Generator().manual_seed(1)
    # Mid-range colours, so no channel of the mix is clamped.
    a = 0.25 + 0.5 * torch.rand(1, 3, 8, 8, generator=gen)
    b = 0.25 + 0.5 * torch.rand(1, 3, 8, 8, generator=gen)
    mixed = to_ycbcr(with_luma_of(a, b))
    torch.testing.assert_close(mixed[:, 0], to_ycbcr(a)[:, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(mixed[:, 1:], to_ycbcr(b)[:, 1:], atol=1e-6, rtol=0)


def test_probe_rows_on_clips(tmp_path):
    root = write_clips(tmp_path / "clips", clips=2, people=["p0", "p1"])
    samples, _ = video_protocol_samples(root)
    samples = with_condition(samples, "jpeg75")
    colour = [refs for _, refs, _ in video_protocol_samples(root, reference_channels=3)[0]]
    torch.manual_seed(0)
    model = FSRST(config_for("fsrst_x4_small")).eval()
    result = probe(model, samples, colour)
    assert list(result) == list(ROWS)
    lr = torch.stack([s[0] for s in samples])
    hr = torch.stack([s[2] for s in samples])
    with torch.no_grad():
        feats = model.encode_references(torch.stack([s[1] for s in samples]).flatten(0, 1))
        out = model(lr, feats.unflatten(0, (len(samples), 3)), torch.ones(len(samples), 3,
                                                                          dtype=torch.bool))
    assert abs(result["model"] - float(psnr(out, hr).mean())) < 1e-4
    references = torch.stack(colour).mean(dim=1)
    assert abs(result["model luma, references' chroma"]
               - float(psnr(with_luma_of(out, references), hr).mean())) < 1e-4
    # The true image's own chroma (or luma) can only bring the output closer to it.
    assert result["model luma, true chroma"] > result["model"]
    assert result["true luma, model chroma"] > result["model"]
