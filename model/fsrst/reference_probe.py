"""Measures how much of what a model gets wrong a person's references could supply.

    /usr/bin/python3 -m fsrst.reference_probe --weights weights/fsrst_x4.pt [--max_shift 4]
        [--video ../../shared/data/video/val] [--condition jpeg75]

No training: an upper bound for pixel transfer, to read beside the evaluation's
reference rows. For each face of the evaluation protocol (fsrst.evaluate; with --video,
each target of the call protocol, references from the call's first seconds), its 32x32
frame under --condition (clean, or e.g. jpeg75 as callers send it), the
model's output without references (K = 0) leaves a luma residual
r = Y(truth) - Y(output). A reference's detail is what a 32x32 face cannot carry:
d = Y(ref) - bicubic_up(bicubic_down(Y(ref))). Two matchers that see the answer
fit r with shifted copies of the details:
  global  per reference one integer shift within +-max_shift and one factor, the
          factors fitted jointly (about one rigid alignment per reference, as the
          paper's spatial transformer gives);
  local   per patch of patch x patch pixels the best single reference, shift and
          factor (far more freedom than any aligner).
Each matcher runs with the person's own references, with another person's (those
of the first photo of the next identity: what the matcher finds by chance), and
with the target's own luma as its only reference (a scale check: what perfect
references would give). Own minus another person's is the identity's share. The model's
own rows with the person's and another person's references show how much of it the
model takes.
PSNR is of luma (BT.601 Y, as the model's references), in dB.
"""

import argparse
import json
from typing import Dict

import numpy as np
import torch
from PIL import Image

from fsrst.degradation import parse_condition
from fsrst.evaluate import (load_module, parse_model_command, protocol_samples, row_outputs,
                            video_protocol_samples, with_condition)

# BT.601 luma, the weights PIL's YCbCr conversion (face_data.luma) uses.
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def luma_of(rgb: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] in [0,1] -> [B,H,W], of the uint8 levels a user would save."""
    levels = torch.round(rgb.clamp(0, 1) * 255.0) / 255.0
    return (levels * _LUMA).sum(1)


def detail(luma: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """[H,W] luma -> the part a bicubic round trip through 1/scale loses (PIL, float)."""
    image = Image.fromarray(luma.numpy().astype(np.float32), mode="F")
    h, w = luma.shape
    small = image.resize((w // scale, h // scale), Image.BICUBIC)
    smooth = np.asarray(small.resize((w, h), Image.BICUBIC), dtype=np.float32)
    return luma - torch.from_numpy(smooth.copy())


def shifted_copies(details: torch.Tensor, max_shift: int) -> torch.Tensor:
    """[K,H,W] -> [K,S,H,W]: each detail moved by every integer (dy, dx) within
    +-max_shift, edges reflected; S = (2 max_shift + 1)^2, shift (0, 0) in the middle."""
    k, h, w = details.shape
    m = max_shift
    padded = torch.nn.functional.pad(details[:, None], (m, m, m, m), mode="reflect")[:, 0]
    copies = [padded[:, dy:dy + h, dx:dx + w] for dy in range(2 * m + 1)
              for dx in range(2 * m + 1)]
    return torch.stack(copies, 1)


def global_fit(residual: torch.Tensor, details: torch.Tensor, max_shift: int) -> torch.Tensor:
    """The best fit of the [H,W] residual by a factor times a shifted copy of each of the
    [K,H,W] details: the shift per reference the one that alone explains most, the
    factors then by joint least squares."""
    copies = shifted_copies(details, max_shift).flatten(2)            # [K,S,HW]
    r = residual.flatten()
    explained = (copies @ r).pow(2) / copies.pow(2).sum(-1).clamp_min(1e-12)
    chosen = copies[torch.arange(len(copies)), explained.argmax(1)]   # [K,HW]
    factors = torch.linalg.lstsq(chosen.T.double(), r[:, None].double()).solution
    return (chosen.T.double() @ factors).float().view_as(residual)


def local_fit(residual: torch.Tensor, details: torch.Tensor, max_shift: int,
              patch: int) -> torch.Tensor:
    """Per patch x patch tile of the [H,W] residual, the best of every reference and
    shift, times its least-squares factor."""
    h, w = residual.shape
    copies = shifted_copies(details, max_shift).flatten(0, 1)         # [KS,H,W]

    def tiles(t):  # [..., H, W] -> [..., T, patch*patch]
        t = t.unflatten(-2, (h // patch, patch)).unflatten(-1, (w // patch, patch))
        return t.transpose(-3, -2).flatten(-4, -3).flatten(-2)

    r, c = tiles(residual), tiles(copies)                              # [T,P], [KS,T,P]
    dot, energy = (c * r).sum(-1), c.pow(2).sum(-1).clamp_min(1e-12)  # [KS,T]
    best = (dot.pow(2) / energy).argmax(0)                             # [T]
    t = torch.arange(r.shape[0])
    fit = (dot[best, t] / energy[best, t])[:, None] * c[best, t]       # [T,P]
    fit = fit.view(h // patch, w // patch, patch, patch).transpose(1, 2)
    return fit.reshape(h, w)


def luma_psnr(prediction: torch.Tensor, truth: torch.Tensor) -> float:
    mse = float((prediction - truth).pow(2).mean())
    return 10.0 * float(np.log10(1.0 / max(mse, 1e-12)))


def check_arguments(max_shift: int, patch: int, size: int = 128) -> None:
    if not 0 <= max_shift < size // 2:
        raise ValueError(f"max_shift is {max_shift}; expected 0 to {size // 2 - 1}")
    if patch < 1 or size % patch:
        raise ValueError(f"patch is {patch}; expected a divisor of {size} (e.g. 8, 16, 32)")


@torch.no_grad()
def probe(module, samples, other_refs, max_shift: int = 4, patch: int = 16,
          batch_size: int = 16) -> Dict[str, float]:
    """Mean luma PSNR (dB) of the model without references, and of it plus each
    matcher's fit, per source of references; and, to read beside the fits, of the model
    itself with the person's own references and with another person's."""
    check_arguments(max_shift, patch, samples[0][2].shape[-1])
    scores: Dict[str, list] = {"model, no references": [], "model, own references": [],
                               "model, another person's references": []}
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        outputs = {name: luma_of(out) for name, out in row_outputs(
            module, chunk, torch.stack(other_refs[start:start + batch_size])).items()}
        predicted = outputs["no refs (K=0)"]
        truth = luma_of(torch.stack([s[2] for s in chunk]))
        for name, row in (("model, own references", "own refs"),
                          ("model, another person's references", "another person's refs")):
            scores[name] += [luma_psnr(outputs[row][i], truth[i]) for i in range(len(chunk))]
        for i, (_, own, _) in enumerate(chunk):
            residual = truth[i] - predicted[i]
            scores["model, no references"].append(luma_psnr(predicted[i], truth[i]))
            sources = {"own": own[:, 0], "another person's": other_refs[start + i][:, 0],
                       "target itself": truth[i][None]}
            for source, refs in sources.items():
                details = torch.stack([detail(r) for r in refs])
                for matcher, fit in (("global", global_fit(residual, details, max_shift)),
                                     ("local", local_fit(residual, details, max_shift, patch))):
                    scores.setdefault(f"+ {matcher} fit, {source}", []).append(
                        luma_psnr(predicted[i] + fit, truth[i]))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max_shift", type=int, default=4, help="pixels, each way")
    parser.add_argument("--patch", type=int, default=16, help="the local matcher's tile side")
    parser.add_argument("--limit", type=int, default=0,
                        help="first N faces or call targets only (0: all)")
    parser.add_argument("--video", default="",
                        help="clip folder: call frames by the video protocol instead of faces")
    parser.add_argument("--condition", default="clean",
                        help="the frame's condition: clean, jpeg<q>[_420|_422|_444]")
    args = parse_model_command(parser)
    try:
        check_arguments(args.max_shift, args.patch)
        parse_condition(args.condition)
    except ValueError as e:
        parser.error(str(e))
    root = args.video or args.data
    samples, others = video_protocol_samples(root) if args.video else protocol_samples(root)
    if args.limit:
        samples, others = samples[:args.limit], others[:args.limit]
    samples = with_condition(samples, args.condition)
    results = probe(load_module(args), samples, others, args.max_shift, args.patch)
    print(f"{args.weights or args.checkpoint} on {root}, {args.condition} frames: "
          f"{len(samples)} {'targets' if args.video else 'faces'}, "
          f"max_shift {args.max_shift}, patch {args.patch}\n")
    print("| luma | PSNR (dB) | over the model |\n|---|---|---|")
    base = results["model, no references"]
    for name, value in results.items():
        print(f"| {name} | {value:.3f} | {value - base:+.3f} |")
    for matcher in ("global", "local"):
        share = results[f"+ {matcher} fit, own"] - results[f"+ {matcher} fit, another person's"]
        print(f"\n{matcher}: own minus another person's references {share:+.3f} dB")
    share = results["model, own references"] - results["model, another person's references"]
    print(f"\nthe model: own minus another person's references {share:+.3f} dB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"set": root, "condition": args.condition, "samples": len(samples),
                       "max_shift": args.max_shift, "patch": args.patch,
                       "luma_psnr": results}, f, indent=1)


if __name__ == "__main__":
    main()
