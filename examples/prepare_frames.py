#!/usr/bin/python3
"""Turns photos or a video of one person into what fsrst_server takes: 128x128
reference photos and 32x32 low-resolution frames (and, with --truth, the 128x128
frames the low-resolution ones were made from, for a side-by-side picture).

    examples/prepare_frames.py INPUT [INPUT ...] --out_dir DIR
        [--references 3] [--frames 8] [--crop centre | --face_box X,Y,W,H | --crop detect]
        [--truth] [--quality 90]

INPUT: image files (any format PIL reads), folders of images (sorted by the number in
their name, then by name; a clip.json with "fps" beside frames named <frame index>.png
gives their times, as in the project's video data), or video files (needs OpenCV:
`apt-get install python3-opencv`).

Which pictures become what follows the project's call protocol (fsrst.video_data):
references = the pictures nearest 0, 1.6 and 3.2 s, frames = evenly spaced from 5 s to
the end; a sequence shorter than 7 s (and a list of photos, counted as 7 s) is scaled
to its length. So a call's references are sent once at its start and its frames come
later. --references and --frames change how many.

The crop (every picture is cut to a square, then resized with Lanczos to 128x128):
  --crop centre (default)  the largest centred square;
  --face_box X,Y,W,H       a face box in pixels of the input (e.g. from your face
                           tracker), cut the way the training data was made: a
                           square of 1.8x the box's larger side, its centre raised by
                           5% of that side, moved to stay inside the picture;
  --crop detect            that face box found by OpenCV's frontal Haar cascade
                           (largest face), per picture; needs OpenCV.
The training data (shared/data/README.md) was cut with the face box rule, so
`--face_box` / `--crop detect` match it best; centre crop suits pictures already
framed around one face.

Low-resolution frames are the 128x128 crop downscaled with PIL bicubic to 32x32 (as
training made them) and saved as JPEG at --quality (4:4:4); references and truth as
JPEG too. Written: DIR/references/ref_<i>.jpg, DIR/frames/frame_<i>.jpg and with
--truth DIR/truth/frame_<i>.jpg (same names as the frames).
"""

import argparse
import json
import os
import re
import sys
from typing import List, Optional, Sequence, Tuple

from PIL import Image

REFERENCE_SIZE = 128
LR_SIZE = 32
# The call protocol of fsrst.video_data, in seconds.
REFERENCE_TIMES_S = (0.0, 1.6, 3.2)
FIRST_FRAME_S = 5.0
PROTOCOL_LENGTH_S = 7.0
# How the training crops were cut around a face box (shared/data/README.md).
FACE_BOX_SCALE = 1.8
FACE_BOX_RAISE = 0.05
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


class PrepareError(Exception):
    """Bad input: the message names the argument or file and what was expected."""


def parse_box(text: str) -> Tuple[int, int, int, int]:
    """'X,Y,W,H' -> (x, y, w, h) with w, h > 0."""
    parts = text.split(",")
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise PrepareError(f"--face_box: expected X,Y,W,H (four integers), got {text!r}") from None
    if w <= 0 or h <= 0:
        raise PrepareError(f"--face_box: expected a width and height above 0, got {w}x{h}")
    return x, y, w, h


def centre_square(width: int, height: int) -> Tuple[int, int, int]:
    """(left, top, side) of the largest centred square."""
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


def face_square(box: Tuple[int, int, int, int], width: int, height: int) -> Tuple[int, int, int]:
    """(left, top, side) of the training data's crop around a face box: 1.8x the box's
    larger side, centre raised by 5% of it, at most the picture's shorter side, moved
    to stay inside the picture."""
    x, y, w, h = box
    face = max(w, h)
    side = min(int(round(FACE_BOX_SCALE * face)), width, height)
    centre_x = x + w / 2
    centre_y = y + h / 2 - FACE_BOX_RAISE * face
    left = int(round(centre_x - side / 2))
    top = int(round(centre_y - side / 2))
    left = min(max(left, 0), width - side)
    top = min(max(top, 0), height - side)
    return left, top, side


def detect_face(image: Image.Image) -> Optional[Tuple[int, int, int, int]]:
    """The largest frontal face OpenCV's Haar cascade finds, or None."""
    cv2, np = _opencv()
    grey = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2GRAY)
    cascade = cv2.CascadeClassifier(_frontal_face_cascade(cv2))
    faces = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5)
    if len(faces) == 0:
        return None
    return tuple(int(v) for v in max(faces, key=lambda f: f[2] * f[3]))


# Where the frontal-face Haar cascade lives: pip's opencv-python ships it (cv2.data);
# Debian's python3-opencv does not, its package opencv-data puts it here.
DEBIAN_CASCADE_DIR = "/usr/share/opencv4/haarcascades"
CASCADE_FILE = "haarcascade_frontalface_default.xml"


def _frontal_face_cascade(cv2) -> str:
    folders = [getattr(getattr(cv2, "data", None), "haarcascades", None), DEBIAN_CASCADE_DIR]
    for folder in folders:
        if folder and os.path.isfile(os.path.join(folder, CASCADE_FILE)):
            return os.path.join(folder, CASCADE_FILE)
    raise PrepareError(f"--crop detect needs OpenCV's {CASCADE_FILE} (Debian: apt-get install "
                       f"opencv-data, which puts it in {DEBIAN_CASCADE_DIR})")


def crop_to_reference(image: Image.Image, crop: str,
                      box: Optional[Tuple[int, int, int, int]]) -> Image.Image:
    """The 128x128 RGB crop of `image` (see the module docstring)."""
    image = image.convert("RGB")
    if crop == "detect":
        box = detect_face(image)
        if box is None:
            raise PrepareError("--crop detect: no face found (give --face_box, or --crop centre)")
    if box is not None:
        left, top, side = face_square(box, image.width, image.height)
    else:
        left, top, side = centre_square(image.width, image.height)
    square = image.crop((left, top, left + side, top + side))
    return square.resize((REFERENCE_SIZE, REFERENCE_SIZE), Image.LANCZOS)


def low_resolution(face: Image.Image) -> Image.Image:
    """The 32x32 frame a caller sends: PIL bicubic of the 128x128 crop, as training."""
    return face.resize((LR_SIZE, LR_SIZE), Image.BICUBIC)


def _opencv():
    try:
        import cv2  # noqa: F401  (optional: only videos and --crop detect need it)
        import numpy as np
    except ImportError:
        raise PrepareError("videos and --crop detect need OpenCV for this python "
                           "(Debian: apt-get install python3-opencv)") from None
    return cv2, np


def _name_key(name: str):
    digits = re.findall(r"\d+", name)
    return (int(digits[-1]) if digits else -1, name)


class Picture:
    """One input picture and its time in seconds (None: untimed, a list of photos)."""

    def __init__(self, load, time_s: Optional[float], label: str):
        self.load = load  # () -> PIL image; pictures are read only when picked
        self.time_s = time_s
        self.label = label


def _open_image(path: str):
    def load():
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except OSError as error:
            raise PrepareError(f"{path}: not an image PIL can read ({error})") from None
    return load


def folder_pictures(folder: str) -> List[Picture]:
    names = sorted((n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES)),
                   key=_name_key)
    if not names:
        raise PrepareError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    fps = None
    meta_path = os.path.join(folder, "clip.json")
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            fps = float(json.load(f)["fps"])
    pictures = []
    for name in names:
        stem = os.path.splitext(name)[0]
        time_s = int(stem) / fps if fps and stem.isdigit() else None
        pictures.append(Picture(_open_image(os.path.join(folder, name)), time_s, name))
    if any(p.time_s is None for p in pictures):
        for p in pictures:
            p.time_s = None
    return pictures


def video_pictures(path: str) -> List[Picture]:
    cv2, _ = _opencv()
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise PrepareError(f"{path}: OpenCV cannot open this video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    pictures = []
    index = 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        rgb = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        pictures.append(Picture(lambda image=rgb: image, index / fps, f"{path}#{index}"))
        index += 1
    capture.release()
    if not pictures:
        raise PrepareError(f"{path}: no frames could be decoded")
    return pictures


def collect(inputs: Sequence[str]) -> List[Picture]:
    """Every input's pictures, in order."""
    pictures = []
    for path in inputs:
        if os.path.isdir(path):
            pictures += folder_pictures(path)
        elif not os.path.exists(path):
            raise PrepareError(f"{path}: no such file or folder")
        elif path.lower().endswith(VIDEO_SUFFIXES):
            pictures += video_pictures(path)
        else:
            pictures.append(Picture(_open_image(path), None, path))
    if len(inputs) > 1 or any(p.time_s is None for p in pictures):
        # Mixed inputs have no common clock: spread them over the protocol's 7 s.
        last = max(len(pictures) - 1, 1)
        for position, picture in enumerate(pictures):
            picture.time_s = position * PROTOCOL_LENGTH_S / last
    return pictures


def protocol_positions(times: Sequence[float], references: int,
                       frames: int) -> Tuple[List[int], List[int]]:
    """(reference positions, frame positions): references nearest 0, 1.6, 3.2 s (more
    than three: evenly from 0 to 3.2 s), frames evenly from 5 s to the end, the layout
    scaled to sequences shorter than 7 s; no picture is both, and none is used twice."""
    if references + frames > len(times):
        raise PrepareError(f"--references {references} and --frames {frames} need "
                           f"{references + frames} pictures; the input has {len(times)}")
    start = times[0]
    end = times[-1] - start
    stretch = min(1.0, end / PROTOCOL_LENGTH_S) if end > 0 else 1.0
    if references == len(REFERENCE_TIMES_S):
        ref_times = list(REFERENCE_TIMES_S)
    else:
        step = REFERENCE_TIMES_S[-1] / max(references - 1, 1)
        ref_times = [i * step for i in range(references)]
    if frames == 1:
        frame_times = [end]
    else:
        first = min(FIRST_FRAME_S * stretch, end)
        frame_times = [first + (end - first) * i / (frames - 1) for i in range(frames)]
    used = set()

    def nearest(t):
        free = [p for p in range(len(times)) if p not in used]
        best = min(free, key=lambda p: (abs(times[p] - start - t), p))
        used.add(best)
        return best

    refs = [nearest(t * stretch) for t in ref_times]
    picked = [nearest(t) for t in frame_times]
    return refs, sorted(picked)


def prepare(inputs: Sequence[str], out_dir: str, references: int = 3, frames: int = 8,
            crop: str = "centre", face_box: Optional[Tuple[int, int, int, int]] = None,
            truth: bool = False, quality: int = 90) -> dict:
    """Writes the references and frames; returns what was written (see main)."""
    if references < 1:
        raise PrepareError(f"--references: expected at least 1, got {references}")
    if frames < 1:
        raise PrepareError(f"--frames: expected at least 1, got {frames}")
    if not 1 <= quality <= 100:
        raise PrepareError(f"--quality: expected 1 to 100, got {quality}")
    pictures = collect(inputs)
    ref_positions, frame_positions = protocol_positions([p.time_s for p in pictures],
                                                        references, frames)
    folders = {name: os.path.join(out_dir, name) for name in ("references", "frames", "truth")}
    for name, folder in folders.items():
        if name != "truth" or truth:
            os.makedirs(folder, exist_ok=True)
    written = {"references": [], "frames": [], "truth": []}
    for i, position in enumerate(ref_positions):
        face = crop_to_reference(pictures[position].load(), crop, face_box)
        path = os.path.join(folders["references"], f"ref_{i}.jpg")
        face.save(path, "JPEG", quality=max(quality, 95), subsampling=0)
        written["references"].append((pictures[position].label, path))
    for i, position in enumerate(frame_positions):
        face = crop_to_reference(pictures[position].load(), crop, face_box)
        path = os.path.join(folders["frames"], f"frame_{i:03d}.jpg")
        low_resolution(face).save(path, "JPEG", quality=quality, subsampling=0)
        written["frames"].append((pictures[position].label, path))
        if truth:
            truth_path = os.path.join(folders["truth"], f"frame_{i:03d}.jpg")
            face.save(truth_path, "JPEG", quality=quality, subsampling=0)
            written["truth"].append((pictures[position].label, truth_path))
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("inputs", nargs="+", help="image files, folders of images, or videos")
    parser.add_argument("--out_dir", required=True, help="where references/ and frames/ go")
    parser.add_argument("--references", type=int, default=3, help="reference photos to write")
    parser.add_argument("--frames", type=int, default=8, help="low-resolution frames to write")
    parser.add_argument("--crop", choices=["centre", "detect"], default="centre",
                        help="centre: centred square; detect: OpenCV face box, training rule")
    parser.add_argument("--face_box", help="X,Y,W,H: crop around this face box (training rule)")
    parser.add_argument("--truth", action="store_true",
                        help="also write the 128x128 frames the 32x32 ones were made from")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the frames")
    args = parser.parse_args(argv)
    try:
        if args.face_box and args.crop == "detect":
            raise PrepareError("--face_box and --crop detect: give one of them")
        written = prepare(args.inputs, args.out_dir, args.references, args.frames, args.crop,
                          parse_box(args.face_box) if args.face_box else None, args.truth,
                          args.quality)
    except PrepareError as error:
        print(f"prepare_frames: error: {error}", file=sys.stderr)
        return 1
    for kind in ("references", "frames", "truth"):
        for label, path in written[kind]:
            print(f"{path} <- {label}")
    print(f"wrote {len(written['references'])} references and {len(written['frames'])} frames "
          f"into {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
