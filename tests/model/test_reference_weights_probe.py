"""The per-reference weight probe: clips grouped as the protocol made them, and its figures
computed from forward_with_weights."""

import torch

from face_folders import write_clips
from fsrst import FSRST
from fsrst.evaluate import video_protocol_samples
from fsrst.image_metrics import psnr
from fsrst.reference_weights_probe import by_clip, probe_clips, reference_share
from fsrst.variants import config_for


def test_probe_groups_clips_and_reports_the_other_reference(tmp_path):
    root = write_clips(tmp_path / "clips", clips=3, seconds=8.0, fps=10.0,
                       people=["p0", "p1", "p2"])
    samples, others = video_protocol_samples(root)
    clips = by_clip(samples, others)
    assert [len(c["samples"]) for c in clips] == [10, 10, 10]
    assert clips[0]["other"] is clips[1]["refs"]  # the next clip's person
    torch.manual_seed(0)
    model = FSRST(config_for("fsrst_x4_small")).eval()
    result = probe_clips(model, clips)
    assert result["clips"] == 3
    assert result["other_smallest_share"] in (0.0, 1 / 3, 2 / 3, 1.0)
    # The PSNR difference of the first clip, by hand.
    clip = clips[0]
    lr = torch.stack([s[0] for s in clip["samples"]])
    hr = torch.stack([s[2] for s in clip["samples"]])
    with torch.no_grad():
        feats = model.encode_references(torch.cat([clip["refs"], clip["other"][:1]]))
        feats = feats[None].expand(10, -1, -1, -1, -1)
        four = model(lr, feats, torch.ones(10, 4, dtype=torch.bool))
        three = model(lr, feats[:, :3], torch.ones(10, 3, dtype=torch.bool))
        delta = float(psnr(four, hr).mean() - psnr(three, hr).mean())
    assert result["psnr_4_minus_3_worst_clip_db"] <= delta + 1e-6
    share = reference_share(model, samples)
    assert 0.0 < share < 1.0
