"""Evaluates FSRST on a face folder: PSNR (RGB, uint8) and SSIM.

    /usr/bin/python3 -m fsrst.evaluate --weights weights/fsrst_x4.pt [--data ../../shared/data/faces/val]
    /usr/bin/python3 -m fsrst.evaluate --checkpoint checkpoints/fsrst_x4.pt --variant fsrst_x4

Protocol: each photo of each identity is a target; LR = PIL bicubic 128->32;
its references are the next three photos of the identity (cyclically). Rows:
bicubic (PIL, 32->128), the model with references, the same model with none
(K = 0), and with another person's references (those of the first photo of the
next identity): a model that uses who the references show scores below its
own-reference row there. Prints a Markdown table; --json writes the numbers.
"""

import argparse
import json

import numpy as np
import torch
from PIL import Image

from fsrst.face_data import evaluation_samples, list_identities
from fsrst.image_metrics import psnr, ssim


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """PIL bicubic of each [3,L,L] image, as the usual bicubic baseline."""
    out = []
    for image in lr:
        array = (image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        up = Image.fromarray(array).resize((array.shape[1] * scale, array.shape[0] * scale),
                                           Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(up, dtype=np.float32) / 255.0).permute(2, 0, 1))
    return torch.stack(out)


def other_identity_references(samples, photos_per_identity):
    """For each sample, the references of the first sample of the next identity
    (cyclically). `photos_per_identity` lists the sample count of each identity, in
    the order evaluation_samples returns them; needs at least two identities."""
    if len(photos_per_identity) < 2:
        raise ValueError("other-identity references need at least two identities")
    firsts = [sum(photos_per_identity[:k]) for k in range(len(photos_per_identity))]
    donors = []
    for k, count in enumerate(photos_per_identity):
        donor = samples[firsts[(k + 1) % len(firsts)]][1]
        donors.extend([donor] * count)
    return donors


def add_model_arguments(parser) -> None:
    """--weights or --checkpoint (with --variant), and --data: what load_module reads."""
    parser.add_argument("--weights", help="exported TorchScript file")
    parser.add_argument("--checkpoint", help="training checkpoint (with --variant)")
    parser.add_argument("--ema", action="store_true",
                        help="the checkpoint's weight average instead of its last weights")
    parser.add_argument("--variant", default="fsrst_x4")
    parser.add_argument("--data", default="../../shared/data/faces/val")


def load_module(args):
    if args.weights:
        return torch.jit.load(args.weights, map_location="cpu")
    from fsrst.export import build_model
    model, _ = build_model(args.variant, args.checkpoint, ema=args.ema)
    return model


@torch.no_grad()
def evaluate(module, samples, other_refs, scale: int = 4, batch_size: int = 16) -> dict:
    """`other_refs`: per sample, references of another person (other_identity_references)."""
    rows = {name: ([], []) for name in ("bicubic", "fsrst (3 refs)", "fsrst (no refs)",
                                        "fsrst (another person's 3 refs)")}
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        lr = torch.stack([s[0] for s in chunk])
        refs = torch.stack([s[1] for s in chunk])
        hr = torch.stack([s[2] for s in chunk])
        others = torch.stack(other_refs[start:start + batch_size])
        b, k = refs.shape[:2]
        feats = module.encode_references(refs.flatten(0, 1)).unflatten(0, (b, k))
        other_feats = module.encode_references(others.flatten(0, 1)).unflatten(0, (b, k))
        all_slots = torch.ones(b, k, dtype=torch.bool)
        outputs = {
            "bicubic": bicubic_upscale(lr, scale),
            "fsrst (3 refs)": module(lr, feats, all_slots),
            "fsrst (no refs)": module(lr, feats[:, :0], torch.zeros(b, 0, dtype=torch.bool)),
            "fsrst (another person's 3 refs)": module(lr, other_feats, all_slots),
        }
        for name, out in outputs.items():
            rows[name][0].append(psnr(out, hr))
            rows[name][1].append(ssim(out, hr))
    return {name: {"psnr": float(torch.cat(p).mean()), "ssim": float(torch.cat(s).mean()),
                   "images": int(torch.cat(p).numel())} for name, (p, s) in rows.items()}


def protocol_samples(root: str):
    """The evaluation protocol's samples of a face folder and, per sample, another
    person's references (other_identity_references)."""
    samples = evaluation_samples(root)
    counts = [len(photos) for photos in list_identities(root)]
    return samples, other_identity_references(samples, counts)


def parse_model_command(parser):
    """Adds the model arguments, --threads and --json, parses the command line and sets
    torch's thread count: the shared front of the commands that score a model on val."""
    add_model_arguments(parser)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="file to write the numbers to")
    args = parser.parse_args()
    if not args.weights and not args.checkpoint:
        parser.error("give --weights or --checkpoint")
    torch.set_num_threads(args.threads)
    return args


def main() -> None:
    args = parse_model_command(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    samples, others = protocol_samples(args.data)
    results = evaluate(load_module(args), samples, others)
    name = args.weights or args.checkpoint
    print(f"{name} on {args.data}\n")
    print("| method | PSNR (dB) | SSIM |\n|---|---|---|")
    for method, r in results.items():
        print(f"| {method} | {r['psnr']:.2f} | {r['ssim']:.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
