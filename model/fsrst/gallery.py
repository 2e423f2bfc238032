"""Draws a picture of FSRST on a few faces: LR | bicubic | FSRST | ground truth | references.

    /usr/bin/python3 -m fsrst.gallery --weights weights/fsrst_x4.pt --out ../docs/model/gallery.png
    /usr/bin/python3 -m fsrst.gallery --checkpoint checkpoints/fsrst_x4.pt --variant fsrst_x4 ...

The faces follow the evaluation protocol (fsrst.evaluate): the first photo of
each of the first --faces identities is the target, the next three photos of
the identity its references. The LR face is shown enlarged with nearest
neighbours, the references as the luma the model sees.
"""

import argparse
import os
from typing import List

import numpy as np
import torch
from PIL import Image, ImageDraw

from fsrst.evaluate import add_model_arguments, bicubic_upscale, load_module
from fsrst.face_data import evaluation_samples, list_identities

COLUMNS = ["LR 32x32", "bicubic", "FSRST", "ground truth", "references (luma)"]


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


@torch.no_grad()
def draw(module, samples, scale: int = 4) -> Image.Image:
    lr = torch.stack([s[0] for s in samples])
    refs = torch.stack([s[1] for s in samples])
    hr = torch.stack([s[2] for s in samples])
    b, k = refs.shape[:2]
    feats = module.encode_references(refs.flatten(0, 1)).unflatten(0, (b, k))
    enhanced = module(lr, feats, torch.ones(b, k, dtype=torch.bool))
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
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--faces", type=int, default=4)
    parser.add_argument("--out", required=True, help="PNG file to write")
    args = parser.parse_args()
    if not args.weights and not args.checkpoint:
        parser.error("give --weights or --checkpoint")
    samples = evaluation_samples(args.data)
    chosen = [samples[i] for i in first_photo_of_each_identity(args.data, args.faces)]
    picture = draw(load_module(args), chosen)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    picture.save(args.out)
    print(f"wrote {args.out} ({len(chosen)} faces)")


if __name__ == "__main__":
    main()
