"""Do blur, sensor noise or a video codec's artifacts matter? The call protocol on video/val
(fsrst.video_data) under frame conditions beyond clean and JPEG, the same rows as
fsrst.evaluate.

    /usr/bin/python3 -m fsrst.frame_conditions_study --weights weights/fsrst_x4_small.pt \
        [--conditions clean jpeg75 noise4 blur2 h264_crf23 h264_crf28 h264_crf33] \
        [--clips N] [--json out.json]

Conditions (on each kept frame of a clip, 128x128 -> 32x32 by PIL bicubic unless said):
- `clean`, `jpeg<q>`: as fsrst.evaluate (JPEG 4:2:0);
- `noise<s>`: Gaussian sensor noise of sigma s levels on the 32x32 frame (seeded per clip);
- `blur<s>`: a soft camera: Gaussian blur of radius s pixels on the 128x128 frame first;
- `h264_crf<n>`: the clip's 32x32 frames as one H.264 stream (libx264, constant quality n,
  4:2:0, at the kept frames' rate: every 4th frame of the source), decoded (fsrst.video_codec).
Per condition: the bytes a frame costs on the wire (JPEG file; H.264: the stream over its
frames), the frame's PSNR against the clean 32x32 frame, and the model's rows.
"""

import argparse
import io
import re
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageFilter

from fsrst.degradation import jpeg
from fsrst.evaluate import ROWS, evaluate, load_module, parse_model_command, report
from fsrst.face_data import downscale, to_tensor
from fsrst.image_metrics import psnr_of_images
from fsrst.video_codec import h264_round_trip
from fsrst.video_data import (list_clips, load_clip_frames, other_clip_references,
                              protocol_positions, video_evaluation_samples)

DEFAULT_CONDITIONS = ["clean", "jpeg75", "noise4", "blur2", "h264_crf23", "h264_crf28",
                      "h264_crf33"]
_CONDITION = re.compile(r"^(clean|jpeg|noise|blur|h264_crf)(\d*)$")
SCALE = 4


def parse_condition(name: str) -> Tuple[str, int]:
    """'h264_crf28' -> ('h264_crf', 28); a ValueError names what is expected."""
    match = _CONDITION.match(name)
    if not match or (match.group(1) == "clean") != (match.group(2) == ""):
        raise ValueError(f"condition {name!r}: expected clean, jpeg<q>, noise<sigma>, "
                         f"blur<radius> or h264_crf<n>")
    return match.group(1), int(match.group(2) or 0)


def _jpeg_bytes(lr: Image.Image, quality: int) -> int:
    buffer = io.BytesIO()
    lr.save(buffer, "JPEG", quality=quality, subsampling=2)
    return len(buffer.getvalue())


def clip_frames(hr_frames: List[Image.Image], clean: List[Image.Image], condition: str,
                fps: float, seed: int) -> Tuple[List[Image.Image], float]:
    """Every kept frame of a clip as a caller would send it under `condition` (`clean`: the
    frames made small by PIL bicubic), and the bytes a frame costs (0 where nothing is
    encoded)."""
    kind, value = parse_condition(condition)
    if kind == "clean":
        return clean, 0.0
    if kind == "jpeg":
        return ([jpeg(lr, value) for lr in clean],
                float(np.mean([_jpeg_bytes(lr, value) for lr in clean])))
    if kind == "noise":
        rng = np.random.default_rng(seed)
        noisy = [np.asarray(lr, np.float64) + rng.normal(0.0, value, (*lr.size[::-1], 3))
                 for lr in clean]
        return [Image.fromarray(np.clip(np.round(n), 0, 255).astype(np.uint8)) for n in noisy], 0.0
    if kind == "blur":
        return [downscale(hr.filter(ImageFilter.GaussianBlur(value)), SCALE)
                for hr in hr_frames], 0.0
    decoded, stream_bytes = h264_round_trip(clean, value, fps)
    return decoded, stream_bytes / len(clean)


def load_call_clips(root: str, clips: int = 0) -> List[dict]:
    """The first `clips` clips of `root` (0: all), loaded once for every condition: per clip
    its kept frames (128x128, and 32x32 by PIL bicubic), their rate, and the call protocol's
    target positions, references and another person's references."""
    all_clips = list_clips(root)
    protocol = video_evaluation_samples(root)
    others = other_clip_references(protocol, all_clips)
    loaded, i = [], 0
    for c, clip in enumerate(all_clips[:clips or None]):
        _, targets = protocol_positions(clip)
        hr_frames = load_clip_frames(clip)
        assert all(sample_clip == c for _, _, sample_clip in protocol[i:i + len(targets)])
        loaded.append({"hr": hr_frames, "clean": [downscale(hr, SCALE) for hr in hr_frames],
                       "fps": clip.kept_fps(), "targets": targets, "refs": protocol[i][1],
                       "others": others[i:i + len(targets)]})
        i += len(targets)
    return loaded


def condition_samples(call_clips: List[dict], condition: str):
    """The call protocol's samples (lr, refs, hr) of `call_clips` (load_call_clips) under
    `condition`, another person's references per sample, the mean bytes per frame and the
    mean PSNR of the sent frames against the clean ones (over the targets)."""
    samples, other_refs, costs, fidelity = [], [], [], []
    for c, clip in enumerate(call_clips):
        sent, cost = clip_frames(clip["hr"], clip["clean"], condition, clip["fps"], seed=c)
        costs.append(cost)
        for p in clip["targets"]:
            samples.append((to_tensor(sent[p]), clip["refs"], to_tensor(clip["hr"][p])))
            fidelity.append(psnr_of_images(sent[p], clip["clean"][p]))
        other_refs.extend(clip["others"])
    return samples, other_refs, float(np.mean(costs)), float(np.mean(fidelity))


def study(module, root: str, conditions, clips: int = 0) -> dict:
    call_clips = load_call_clips(root, clips)
    results = {}
    for condition in conditions:
        samples, others, cost, fidelity = condition_samples(call_clips, condition)
        rows = evaluate(module, samples, others)
        results[condition] = {"bytes_per_frame": cost, "frame_psnr_vs_clean": fidelity,
                              "frames": len(samples),
                              **{name: rows[name]["psnr"] for name in ROWS}}
    return results


def markdown_table(results: dict) -> str:
    lines = ["| frame | bytes per frame | frame PSNR vs clean frame | bicubic | own refs | "
             "over bicubic | own - none | own - another's |", "|---|---|---|---|---|---|---|---|"]
    for condition, r in results.items():
        bicubic, own, none, other = (r[name] for name in ROWS)
        cost = f"{r['bytes_per_frame']:.0f}" if r["bytes_per_frame"] else "-"
        fidelity = "-" if condition == "clean" else f"{r['frame_psnr_vs_clean']:.2f}"
        lines.append(f"| {condition} | {cost} | {fidelity} | {bicubic:.2f} | {own:.2f} | "
                     f"{own - bicubic:+.2f} | {own - none:+.3f} | {own - other:+.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", default="../../shared/data/video/val")
    parser.add_argument("--conditions", nargs="+", default=DEFAULT_CONDITIONS)
    parser.add_argument("--clips", type=int, default=0, help="only the first N clips (0: all)")
    args = parse_model_command(parser)
    if args.clips < 0:
        parser.error(f"--clips: expected 0 (all) or more, got {args.clips}")
    for condition in args.conditions:
        try:
            parse_condition(condition)
        except ValueError as e:
            parser.error(str(e))
    results = study(load_module(args), args.video, args.conditions, args.clips)
    report(f"{args.weights or args.checkpoint} on {args.video}, PSNR (dB)",
           markdown_table(results), results, args.json)


if __name__ == "__main__":
    main()
