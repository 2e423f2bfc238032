"""Does a wrong photo get the smallest weight, through the service? On video/val, per clip:
register the person's 3 references plus one of another person (4 in all) and stream the
clip's 10 target frames; register the 3 alone and stream them again.

    build/server/fsrst_server --model=model/weights/fsrst_x4_small.pt --port=50061 &
    /usr/bin/python3 clients/bench/reference_weights_check.py --server 127.0.0.1:50061 \
        [--conditions jpeg75] [--clips N] [--json out.json]

Per condition it prints the share of clips where the other person's reference has the
smallest mean weight (the weights the stream reports, averaged over the clip's frames), the
PSNR of the answers with 4 references minus those with the 3 alone (mean over clips, and the
worst clip), and the mean reference share (sum of the weights) with the 3 alone on the call
frames (the probe's face-photo share is '-' here).

The clips, frames and references are fsrst.reference_weights_probe's (the call protocol of
fsrst.video_data; the other person's reference is the next clip's first): the probe runs the
model in-process, this runs it behind the server. A frame is sent as RGB8 of what the
condition left of it (jpeg75: the decoded JPEG); a reference as the clip's RGB frame, whose
luma the server computes exactly as the probe's (PIL's YCbCr Y). Needs Debian's torch
(/usr/bin/python3).
"""

import argparse
import os
import sys

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path[:0] = [os.path.join(ROOT, "model"), os.path.join(ROOT, "clients", "python")]

from fsrst.evaluate import to_pil, video_protocol_samples, with_condition  # noqa: E402
from fsrst.face_data import load_rgb  # noqa: E402
from fsrst.image_metrics import psnr_of_images  # noqa: E402
from fsrst.reference_weights_probe import by_clip, report  # noqa: E402
from fsrst.video_data import list_clips, protocol_positions  # noqa: E402
from fsrst_client import FsrstClient  # noqa: E402

DEFAULT_VIDEO = os.path.join(ROOT, "..", "shared", "data", "video", "val")


def reference_photos(root: str, clips) -> list:
    """Per protocol clip (by_clip order: the clips of `root` in order), its references as
    RGB arrays, and the other person's as the first of its donor clip's."""
    all_clips = list_clips(root)
    photos = [[np.asarray(load_rgb(clip.frames[p][1], 128)) for p in protocol_positions(clip)[0]]
              for clip in all_clips]
    index_of = {id(clip["refs"]): i for i, clip in enumerate(clips)}
    return [(photos[i], photos[index_of[id(clip["other"])]][0]) for i, clip in enumerate(clips)]


def stream_clip(client: FsrstClient, identity: str, references, frames):
    """Registers `references` as `identity`, streams `frames`, forgets it. Returns the
    answers and each frame's weights ([frames, references])."""
    client.register_references(identity, references)
    try:
        answers = list(client.enhance_stream(identity, frames, with_weights=True))
    finally:
        client.delete_references(identity)
    return [a.image for a in answers], np.array([list(a.weights) for a in answers])


def check_clips(client: FsrstClient, clips, photos, condition: str) -> dict:
    smallest, deltas, shares = [], [], []
    for i, (clip, (own, other)) in enumerate(zip(clips, photos)):
        frames = [np.asarray(to_pil(s[0])) for s in clip["samples"]]
        truths = [to_pil(s[2]) for s in clip["samples"]]
        four, four_weights = stream_clip(client, f"weights-check-{condition}-{i}-four",
                                         own + [other], frames)
        three, three_weights = stream_clip(client, f"weights-check-{condition}-{i}-three",
                                           own, frames)
        smallest.append(int(four_weights.mean(axis=0).argmin()) == len(own))
        deltas.append(np.mean([psnr_of_images(a, t) for a, t in zip(four, truths)])
                      - np.mean([psnr_of_images(a, t) for a, t in zip(three, truths)]))
        shares.extend(three_weights.sum(axis=1))
    return {"clips": len(clips),
            "other_smallest_share": sum(smallest) / len(smallest),
            "psnr_4_minus_3_db": float(np.mean(deltas)),
            "psnr_4_minus_3_worst_clip_db": float(min(deltas)),
            "share_video": float(np.mean(shares))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True, help="host:port of a running fsrst_server")
    parser.add_argument("--video", default=DEFAULT_VIDEO, help="clip folder (video/val)")
    parser.add_argument("--conditions", nargs="+", default=["clean", "jpeg75"])
    parser.add_argument("--clips", type=int, default=0, help="only the first N clips (0: all)")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    if args.clips < 0:
        parser.error(f"--clips: expected 0 (all) or more, got {args.clips}")
    video, others = video_protocol_samples(args.video)
    keep = args.clips or None
    # A condition changes the frames only: the clips, and so their reference photos, stay.
    photos = reference_photos(args.video, by_clip(video, others))[:keep]
    results = {}
    with FsrstClient(args.server, timeout_s=120) as client:
        if not client.server_info().reference_weights:
            sys.exit(f"{args.server}: its model reports no reference weights "
                     "(exported before forward_with_weights)")
        for condition in args.conditions:
            clips = by_clip(with_condition(video, condition), others)[:keep]
            results[condition] = check_clips(client, clips, photos, condition)
    report(results, args.json)


if __name__ == "__main__":
    main()
