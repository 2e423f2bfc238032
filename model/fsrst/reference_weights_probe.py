"""Which references the model uses: per-reference aggregation weights on video/val.

    /usr/bin/python3 -m fsrst.reference_weights_probe --checkpoint checkpoints/X.pt \
        --variant fsrst_x4_small --ema [--conditions clean jpeg75] [--json out.json]

Per clip of the call protocol (fsrst.video_data: references at 0, 1.6, 3.2 s, 10 targets),
the person's three references plus one of another person (the next clip's first reference)
go to forward_with_weights together. Reported per frame condition:
- the share of clips where the other person's reference has the smallest mean weight;
- PSNR with the 4 references minus PSNR with the person's 3 alone (a wrong photo should not
  hurt);
- the mean reference share (sum of the weights: how much of the aggregation the references
  carry) with the person's 3 references, on video/val and on faces/val.
"""

import argparse
import json

import torch

from fsrst.evaluate import (add_model_arguments, load_module, protocol_samples,
                            reference_channels_of, video_protocol_samples, with_condition)
from fsrst.image_metrics import psnr


def by_clip(samples, others):
    """Groups (lr, refs, hr) samples and their other-person references into clips, in order:
    consecutive samples that share a references tensor are one clip."""
    clips = []
    for sample, other in zip(samples, others):
        if clips and clips[-1]["refs"] is sample[1]:
            clips[-1]["samples"].append(sample)
        else:
            clips.append({"refs": sample[1], "other": other, "samples": [sample]})
    return clips


@torch.no_grad()
def probe_clips(module, clips) -> dict:
    smallest, deltas = [], []
    for clip in clips:
        lr = torch.stack([s[0] for s in clip["samples"]])
        hr = torch.stack([s[2] for s in clip["samples"]])
        b = lr.shape[0]
        refs = torch.cat([clip["refs"], clip["other"][:1]])  # 3 own + 1 other person's
        feats = module.encode_references(refs)[None].expand(b, -1, -1, -1, -1)
        four, weights = module.forward_with_weights(lr, feats, torch.ones(b, 4, dtype=torch.bool))
        three = module(lr, feats[:, :3].contiguous(), torch.ones(b, 3, dtype=torch.bool))
        smallest.append(int(weights.mean(dim=0).argmin()) == 3)
        deltas.append(float(psnr(four, hr).mean() - psnr(three, hr).mean()))
    return {"clips": len(clips),
            "other_smallest_share": sum(smallest) / len(smallest),
            "psnr_4_minus_3_db": sum(deltas) / len(deltas),
            "psnr_4_minus_3_worst_clip_db": min(deltas)}


@torch.no_grad()
def reference_share(module, samples, batch_size: int = 16) -> float:
    shares = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        lr = torch.stack([s[0] for s in chunk])
        refs = torch.stack([s[1] for s in chunk])
        b, k = refs.shape[:2]
        feats = module.encode_references(refs.flatten(0, 1)).unflatten(0, (b, k))
        _, weights = module.forward_with_weights(lr, feats, torch.ones(b, k, dtype=torch.bool))
        shares.append(weights.sum(dim=1))
    return float(torch.cat(shares).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--video", default="../../shared/data/video/val")
    parser.add_argument("--conditions", nargs="+", default=["clean", "jpeg75"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    module = load_module(args)
    channels = reference_channels_of(module)
    video, video_others = video_protocol_samples(args.video, reference_channels=channels)
    faces, _ = protocol_samples(args.data, channels)
    results = {}
    for condition in args.conditions:
        video_c = with_condition(video, condition)
        results[condition] = probe_clips(module, by_clip(video_c, video_others))
        results[condition]["share_video"] = reference_share(module, video_c)
        results[condition]["share_faces"] = reference_share(module, with_condition(faces,
                                                                                   condition))
    report(results, args.json)


def report(results: dict, json_path=None) -> None:
    """Prints one table row per condition (the face-photo share '-' where it was not
    measured) and writes the numbers to `json_path` when given."""
    print("| condition | clips | other person's ref smallest | PSNR 4 refs - 3 refs (worst clip) "
          "| reference share, video / faces |")
    print("|---|---|---|---|---|")
    for condition, r in results.items():
        faces = f"{r['share_faces']:.3f}" if "share_faces" in r else "-"
        print(f"| {condition} | {r['clips']} | {r['other_smallest_share']:.0%} | "
              f"{r['psnr_4_minus_3_db']:+.3f} dB ({r['psnr_4_minus_3_worst_clip_db']:+.3f}) | "
              f"{r['share_video']:.3f} / {faces} |")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
