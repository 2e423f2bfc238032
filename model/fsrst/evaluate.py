"""Evaluates FSRST on face photos and on calls: PSNR (RGB, uint8) and SSIM.

    /usr/bin/python3 -m fsrst.evaluate --weights weights/fsrst_x4.pt \
        [--data ../../shared/data/faces/val] [--video ../../shared/data/video/val] \
        [--conditions clean jpeg75]
    /usr/bin/python3 -m fsrst.evaluate --checkpoint checkpoints/fsrst_x4.pt --variant fsrst_x4

Faces protocol: each photo of each identity is a target, its references are the
next three photos of the identity (cyclically). Video protocol (fsrst.video_data):
references = the frames nearest 0, 1.6 and 3.2 s of a clip, targets = 10 frames
evenly from 5 s to the end. LR = PIL bicubic 128->32, then the frame condition
(clean, or JPEG of the 32x32 frame: jpeg75 = quality 75, 4:2:0). Rows: bicubic of
the same LR frame (PIL, 32->128), the model with the person's references, with none
(K = 0), and with another person's references (the next identity's, or the next
clip's): a model that uses who the references show scores below its own-reference
row there. Prints a Markdown table; --json writes the numbers.
"""

import argparse
import json

import numpy as np
import torch
from PIL import Image

from fsrst.degradation import apply_condition
from fsrst.face_data import downscale, evaluation_samples, list_identities, to_tensor
from fsrst.image_metrics import psnr, ssim
from fsrst.video_data import list_clips, other_clip_references, video_evaluation_samples

ROWS = ("bicubic", "own refs", "no refs (K=0)", "another person's refs")


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
    parser.add_argument("--data", default="../../shared/data/faces/val",
                        help="face folder (identity folders of photos)")


def load_module(args):
    if args.weights:
        return torch.jit.load(args.weights, map_location="cpu")
    from fsrst.export import build_model
    model, _ = build_model(args.variant, args.checkpoint, ema=args.ema)
    return model


def with_own_references(module, samples) -> tuple:
    """(lr, hr, the module's output) of a batch of (lr, refs, hr) samples, each frame with
    every one of its references."""
    lr = torch.stack([s[0] for s in samples])
    refs = torch.stack([s[1] for s in samples])
    b, k = refs.shape[:2]
    feats = module.encode_references(refs.flatten(0, 1)).unflatten(0, (b, k))
    return lr, torch.stack([s[2] for s in samples]), module(lr, feats, torch.ones(
        b, k, dtype=torch.bool))


@torch.no_grad()
def row_outputs(module, chunk, others: torch.Tensor, scale: int = 4) -> dict:
    """The images of each row (ROWS) for a chunk of samples (lr, refs, hr): bicubic, the
    model with the person's references, with none (K = 0), and with `others` [B,K,Cr,R,R]."""
    lr = torch.stack([s[0] for s in chunk])
    refs = torch.stack([s[1] for s in chunk])
    b, k = refs.shape[:2]
    feats = module.encode_references(refs.flatten(0, 1)).unflatten(0, (b, k))
    other_feats = module.encode_references(others.flatten(0, 1)).unflatten(0, (b, k))
    all_slots = torch.ones(b, k, dtype=torch.bool)
    return dict(zip(ROWS, (
        bicubic_upscale(lr, scale),
        module(lr, feats, all_slots),
        module(lr, feats[:, :0], torch.zeros(b, 0, dtype=torch.bool)),
        module(lr, other_feats, all_slots))))


@torch.no_grad()
def evaluate(module, samples, other_refs, scale: int = 4, batch_size: int = 16) -> dict:
    """`other_refs`: per sample, references of another person (other_identity_references)."""
    rows = {name: ([], []) for name in ROWS}
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        hr = torch.stack([s[2] for s in chunk])
        others = torch.stack(other_refs[start:start + batch_size])
        for name, out in row_outputs(module, chunk, others, scale).items():
            rows[name][0].append(psnr(out, hr))
            rows[name][1].append(ssim(out, hr))
    return {name: {"psnr": float(torch.cat(p).mean()), "ssim": float(torch.cat(s).mean()),
                   "images": int(torch.cat(p).numel())} for name, (p, s) in rows.items()}


def reference_channels_of(module) -> int:
    """1 (luma) or 3 (RGB): what the module's encode_references takes. Files exported before
    reference_shape() existed take luma."""
    if hasattr(module, "reference_shape"):
        return int(module.reference_shape()[0])
    return 1


def protocol_samples(root: str, reference_channels: int = 1):
    """The evaluation protocol's samples of a face folder and, per sample, another
    person's references (other_identity_references)."""
    samples = evaluation_samples(root, reference_channels=reference_channels)
    counts = [len(photos) for photos in list_identities(root)]
    return samples, other_identity_references(samples, counts)


def to_pil(image: torch.Tensor) -> Image.Image:
    """[3,H,W] in [0,1] (from uint8 levels) -> the RGB image it came from."""
    return Image.fromarray((image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8))


def with_condition(samples, condition: str, scale: int = 4):
    """The samples (lr, refs, hr) with their LR made again from hr under `condition`
    (clean = PIL bicubic, as evaluation_samples makes it)."""
    out = []
    for _, refs, hr in samples:
        lr = apply_condition(downscale(to_pil(hr), scale), condition)
        out.append((to_tensor(lr), refs, hr))
    return out


def video_protocol_samples(root: str, scale: int = 4, reference_channels: int = 1):
    """The video protocol's samples of a clip folder as (lr, refs, hr), clean LR, and per
    sample another person's references (the next clip's)."""
    protocol = video_evaluation_samples(root, reference_channels=reference_channels)
    others = other_clip_references(protocol, list_clips(root))
    samples = [(to_tensor(downscale(hr, scale)), refs, to_tensor(hr)) for hr, refs, _ in protocol]
    return samples, others


def evaluate_sets(module, sets: dict, conditions) -> dict:
    """sets: name -> (samples, other_refs). Returns {set: {condition: evaluate rows}}."""
    return {name: {condition: evaluate(module, with_condition(samples, condition), others)
                   for condition in conditions}
            for name, (samples, others) in sets.items()}


def markdown_table(results: dict) -> str:
    """PSNR per row, and the three differences the targets are stated in."""
    lines = ["| set | frame | " + " | ".join(ROWS) + " | over bicubic | own - none | "
             "own - another's |", "|---|---|" + "---|" * (len(ROWS) + 3)]
    for name, by_condition in results.items():
        for condition, rows in by_condition.items():
            p = [rows[r]["psnr"] for r in ROWS]
            lines.append(f"| {name} | {condition} | " + " | ".join(f"{v:.2f}" for v in p) +
                         f" | {p[1] - p[0]:+.2f} | {p[1] - p[2]:+.3f} | {p[1] - p[3]:+.3f} |")
    lines.append("")
    lines.append("SSIM, own refs: " + ", ".join(
        f"{name} {condition} {rows[ROWS[1]]['ssim']:.4f} (bicubic {rows[ROWS[0]]['ssim']:.4f})"
        for name, by_condition in results.items() for condition, rows in by_condition.items()))
    return "\n".join(lines)


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", default="../../shared/data/video/val",
                        help="clip folder; '' for faces only")
    parser.add_argument("--conditions", nargs="+", default=["clean", "jpeg75"],
                        help="frame conditions: clean, jpeg<q>[_420|_422|_444]")
    args = parse_model_command(parser)
    module = load_module(args)
    channels = reference_channels_of(module)
    sets = {"faces": protocol_samples(args.data, channels)}
    if args.video:
        sets["video"] = video_protocol_samples(args.video, reference_channels=channels)
    results = evaluate_sets(module, sets, args.conditions)
    name = args.weights or args.checkpoint
    report(f"{name}{' (weight average)' if args.ema else ''} on {args.data}"
           f"{' and ' + args.video if args.video else ''}, PSNR (dB)", markdown_table(results),
           results, args.json)


def report(title: str, table: str, results: dict, json_path=None) -> None:
    """Prints a command's title and table, and writes its numbers to `json_path` if given."""
    print(f"{title}\n")
    print(table)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
