"""Draws a picture of FSRST: LR | bicubic | FSRST | ground truth | references, one row per frame.

    /usr/bin/python3 -m fsrst.gallery --weights weights/fsrst_x4.pt --out ../docs/model/gallery_fsrst_x4.png
    /usr/bin/python3 -m fsrst.gallery --checkpoint checkpoints/fsrst_x4.pt --variant fsrst_x4 ...

Rows, each labelled on its LR tile: face photos (the evaluation protocol's first photo of
each of the first --faces identities, references = the next three photos), call frames
(the video protocol's first target of each of the first --clips clips, references = the
frames at 0, 1.6 and 3.2 s), then the first face and the first call frame again with the
32x32 frame compressed as JPEG q75 (4:2:0), as callers send it. The LR tile is the frame
enlarged with nearest neighbours, the references what the model sees (luma, or RGB for a
model with RGB references).
"""

import argparse
import os
from typing import List

import numpy as np
import torch
from PIL import Image, ImageDraw

from fsrst.evaluate import (add_model_arguments, bicubic_upscale, load_module,
                            reference_channels_of, with_condition, with_own_references)
from fsrst.face_data import downscale, evaluation_samples, list_identities, to_tensor
from fsrst.video_data import TARGETS_PER_CLIP, list_clips, video_evaluation_samples

COLUMNS = ["LR 32x32", "bicubic", "FSRST", "ground truth", "references"]


def to_image(tensor: torch.Tensor) -> Image.Image:
    """[C,H,W] in [0,1] -> an RGB PIL image."""
    array = (tensor.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return Image.fromarray(array)


def first_photo_of_each_identity(root: str, faces: int):
    """Indices into evaluation_samples(root) of each identity's first photo."""
    indices, start = [], 0
    for photos in list_identities(root):
        indices.append(start)
        start += len(photos)
    return indices[:faces]


def gallery_rows(faces_root: str, video_root: str, faces: int, clips: int,
                 reference_channels: int = 1):
    """[(label, (lr, refs, hr))]: the rows the module docstring lists."""
    face_samples = evaluation_samples(faces_root, reference_channels=reference_channels)
    rows = [("face", face_samples[i]) for i in first_photo_of_each_identity(faces_root, faces)]
    if video_root:
        protocol = video_evaluation_samples(video_root, reference_channels=reference_channels)
        firsts = [c * TARGETS_PER_CLIP for c in range(min(clips, len(list_clips(video_root))))]
        rows += [("call", (to_tensor(downscale(protocol[i][0], 4)), protocol[i][1],
                           to_tensor(protocol[i][0]))) for i in firsts]
    compressed = [rows[0]] + ([rows[faces]] if video_root and clips else [])
    rows += [(label + " q75", with_condition([sample], "jpeg75")[0])
             for label, sample in compressed]
    return rows


@torch.no_grad()
def draw(module, samples, scale: int = 4, labels=None) -> Image.Image:
    lr, hr, enhanced = with_own_references(module, samples)
    refs = torch.stack([s[1] for s in samples])
    b, k = refs.shape[:2]
    bicubic = bicubic_upscale(lr, scale)
    size, gap, header = hr.shape[-1], 4, 18
    width = (4 + k) * (size + gap)
    canvas = Image.new("RGB", (width, header + b * (size + gap)), "white")
    pen = ImageDraw.Draw(canvas)
    for column, title in enumerate(COLUMNS):
        pen.text((column * (size + gap) + 2, 3), title, fill="black")
    for row in range(b):
        y = header + row * (size + gap)
        tiles: List[Image.Image] = [
            to_image(lr[row]).resize((size, size), Image.NEAREST), to_image(bicubic[row]),
            to_image(enhanced[row]), to_image(hr[row])]
        tiles += [to_image(refs[row, i]) for i in range(k)]
        for column, tile in enumerate(tiles):
            canvas.paste(tile, (column * (size + gap), y))
        if labels:
            pen.rectangle((0, y, 6 * len(labels[row]) + 4, y + 12), fill="white")
            pen.text((2, y + 1), labels[row], fill="black")
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--faces", type=int, default=3)
    parser.add_argument("--video", default="../../shared/data/video/val",
                        help="clip folder for the call rows; '' for none")
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--out", required=True, help="PNG file to write")
    args = parser.parse_args()
    if not args.weights and not args.checkpoint:
        parser.error("give --weights or --checkpoint")
    module = load_module(args)
    rows = gallery_rows(args.data, args.video, args.faces, args.clips,
                        reference_channels_of(module))
    picture = draw(module, [sample for _, sample in rows],
                   labels=[label for label, _ in rows])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    picture.save(args.out)
    print(f"wrote {args.out} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
