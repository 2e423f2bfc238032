"""How much of the model's error on call frames is colour, and how much is luma.

    /usr/bin/python3 -m fsrst.colour_probe --weights weights/fsrst_x4_small.pt \
        [--video ../../shared/data/video/val] [--conditions clean jpeg75] [--json out.json]

On the call protocol (fsrst.video_data), with the person's references, per frame condition:
PSNR (RGB, uint8) of the model's output; of its luma with the true chroma; of the true luma
with its chroma (BT.601 YCbCr, full range, as JPEG codes it); and of its luma with the chroma
of the mean of the person's references, where they are (unaligned). The gap between the first
two is the most that restoring colour could add (what RGB references could give back that luma
references cannot); the gap to the third, the most that restoring luma could; the last says
whether the references' colour, as they stand, is closer than the model's.
"""

import argparse

import torch

from fsrst.evaluate import (load_module, parse_model_command, reference_channels_of, report,
                            video_protocol_samples, with_condition, with_own_references)
from fsrst.image_metrics import psnr

ROWS = ("model", "model luma, true chroma", "true luma, model chroma",
        "model luma, references' chroma")

# BT.601 full range (JFIF): Y = 0.299 R + 0.587 G + 0.114 B, Cb = (B - Y) / 1.772,
# Cr = (R - Y) / 1.402 (offsets left out: they cancel on the way back).
_KR, _KB = 0.299, 0.114


def to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] RGB -> [B,3,H,W] Y, Cb, Cr."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    y = _KR * r + (1.0 - _KR - _KB) * g + _KB * b
    return torch.stack([y, (b - y) / (2.0 * (1.0 - _KB)), (r - y) / (2.0 * (1.0 - _KR))], 1)


def to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """to_ycbcr's inverse."""
    y, cb, cr = ycbcr[:, 0], ycbcr[:, 1], ycbcr[:, 2]
    r = y + 2.0 * (1.0 - _KR) * cr
    b = y + 2.0 * (1.0 - _KB) * cb
    g = (y - _KR * r - _KB * b) / (1.0 - _KR - _KB)
    return torch.stack([r, g, b], 1)


def with_luma_of(luma_source: torch.Tensor, chroma_source: torch.Tensor) -> torch.Tensor:
    """RGB images with the luma of one and the chroma of the other, clamped to [0,1]."""
    a, b = to_ycbcr(luma_source), to_ycbcr(chroma_source)
    return to_rgb(torch.cat([a[:, :1], b[:, 1:]], 1)).clamp(0.0, 1.0)


@torch.no_grad()
def probe(module, samples, colour_references, batch_size: int = 16) -> dict:
    """samples: (lr, refs, hr) with the person's references; colour_references: per sample,
    the same references in RGB [K,3,R,R] -> mean PSNR per row."""
    scores = {row: [] for row in ROWS}
    for start in range(0, len(samples), batch_size):
        _, hr, out = with_own_references(module, samples[start:start + batch_size])
        references = torch.stack(colour_references[start:start + batch_size]).mean(dim=1)
        scores[ROWS[0]].append(psnr(out, hr))
        scores[ROWS[1]].append(psnr(with_luma_of(out, hr), hr))
        scores[ROWS[2]].append(psnr(with_luma_of(hr, out), hr))
        scores[ROWS[3]].append(psnr(with_luma_of(out, references), hr))
    return {row: float(torch.cat(values).mean()) for row, values in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", default="../../shared/data/video/val")
    parser.add_argument("--conditions", nargs="+", default=["clean", "jpeg75"])
    args = parse_model_command(parser)
    module = load_module(args)
    samples, _ = video_protocol_samples(args.video,
                                        reference_channels=reference_channels_of(module))
    colour, _ = video_protocol_samples(args.video, reference_channels=3)
    colour_references = [refs for _, refs, _ in colour]
    results = {condition: probe(module, with_condition(samples, condition), colour_references)
               for condition in args.conditions}
    lines = ["| frame | " + " | ".join(ROWS) + " | colour's part | luma's part | "
             "references' colour |", "|---|" + "---|" * (len(ROWS) + 3)]
    for condition, rows in results.items():
        p = [rows[r] for r in ROWS]
        lines.append(f"| {condition} | " + " | ".join(f"{v:.2f}" for v in p)
                     + f" | {p[1] - p[0]:+.2f} | {p[2] - p[0]:+.2f} | {p[3] - p[0]:+.2f} |")
    name = args.weights or args.checkpoint
    report(f"{name}{' (weight average)' if args.ema else ''} on {args.video}, call frames with "
           "the person's references, PSNR (dB)", "\n".join(lines), results, args.json)


if __name__ == "__main__":
    main()
