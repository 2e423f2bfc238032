"""fsrst_client command line.

    /usr/bin/python3 -m fsrst_client enhance --server localhost:50051 --frame lr.png \
        --ref a.png --ref b.png --out out.png [--side_by_side sbs.png]
    /usr/bin/python3 -m fsrst_client info|health --server localhost:50051

Run with clients/python on PYTHONPATH.
"""

import argparse
import sys
import uuid

from PIL import Image, ImageDraw

from fsrst_client.client import FsrstClient, FsrstError, to_array


def side_by_side(lr, enhanced, references, path: str) -> None:
    """LR (nearest) | bicubic | enhanced | references, each 128 high, labelled."""
    size = enhanced.shape[0]
    lr_image = Image.fromarray(lr)
    tiles = [("LR", lr_image.resize((size, size), Image.NEAREST)),
             ("bicubic", lr_image.resize((size, size), Image.BICUBIC)),
             ("enhanced", Image.fromarray(enhanced))]
    tiles += [(f"ref {i}", Image.fromarray(r).resize((size, size), Image.BICUBIC))
              for i, r in enumerate(references)]
    canvas = Image.new("RGB", (size * len(tiles), size + 16), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, tile) in enumerate(tiles):
        canvas.paste(tile, (i * size, 16))
        draw.text((i * size + 4, 2), label, fill="black")
    canvas.save(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fsrst_client", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["enhance", "info", "health"])
    parser.add_argument("--server", default="localhost:50051")
    parser.add_argument("--frame", help="enhance: the low-resolution face (any image file)")
    parser.add_argument("--ref", action="append", default=[], help="a reference photo (repeat)")
    parser.add_argument("--identity", help="enhance: identity id (default: a fresh one)")
    parser.add_argument("--out", help="enhance: output PNG")
    parser.add_argument("--side_by_side", help="enhance: also write LR|bicubic|enhanced|refs")
    args = parser.parse_args(argv)
    try:
        with FsrstClient(args.server) as client:
            if args.command == "health":
                print(client.health())
            elif args.command == "info":
                print(client.server_info())
            else:
                if not args.frame or not args.out:
                    parser.error("enhance needs --frame and --out")
                identity = ""
                if args.ref:
                    identity = args.identity or f"cli-{uuid.uuid4().hex[:12]}"
                    client.register_references(identity, args.ref)
                lr = to_array(args.frame)
                enhanced = client.enhance(identity, lr)
                Image.fromarray(enhanced).save(args.out)
                if args.side_by_side:
                    side_by_side(lr, enhanced, [to_array(r) for r in args.ref], args.side_by_side)
                print(f"wrote {args.out} ({enhanced.shape[1]}x{enhanced.shape[0]})")
    except FsrstError as error:
        print(f"fsrst_client: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
