"""fsrst_client command line (run with clients/python on PYTHONPATH):

    python3 -m fsrst_client enhance --server localhost:50051 --frame lr.png \\
        --ref a.png --ref b.png --out out.png [--side_by_side sbs.png]
    python3 -m fsrst_client info --server localhost:50051
    python3 -m fsrst_client health --server localhost:50051   # exit 0 only when SERVING

enhance registers the references under --identity (default: a fresh id, deleted
again afterwards), enhances the frame and writes the face; --side_by_side also
writes LR (nearest) | bicubic | enhanced | references, labelled.
"""

import argparse
import os
import sys
import uuid

import numpy as np
from PIL import Image, ImageDraw

from fsrst_client.client import FsrstClient, FsrstError, to_array

LABEL_HEIGHT = 16


def centre_square(array: np.ndarray) -> np.ndarray:
    height, width, _ = array.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return array[top:top + side, left:left + side]


def side_by_side(lr: np.ndarray, enhanced: np.ndarray, references, path: str) -> None:
    """Writes LR (nearest) | bicubic | enhanced | references (centre square), each
    as large as the enhanced face, with a label strip above."""
    size = enhanced.shape[0]
    lr_image = Image.fromarray(lr)
    tiles = [("LR (nearest)", lr_image.resize((size, size), Image.NEAREST)),
             ("bicubic", lr_image.resize((size, size), Image.BICUBIC)),
             ("enhanced", Image.fromarray(enhanced))]
    tiles += [(f"reference {i}", Image.fromarray(centre_square(r)).resize((size, size),
                                                                       Image.BICUBIC))
              for i, r in enumerate(references)]
    canvas = Image.new("RGB", (size * len(tiles), size + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, tile) in enumerate(tiles):
        canvas.paste(tile, (i * size, LABEL_HEIGHT))
        draw.text((i * size + 4, 2), label, fill="black")
    canvas.save(path)


def enhance(client: FsrstClient, args) -> None:
    identity = ""
    if args.ref:
        identity = args.identity or f"cli-{uuid.uuid4().hex[:12]}"
        client.register_references(identity, args.ref)
    try:
        lr = to_array(args.frame)
        enhanced = client.enhance(identity, lr, output=args.output)
    finally:
        if args.ref and not args.identity:
            try:
                client.delete_references(identity)
            except FsrstError:
                pass  # the answer (or the first error) matters more than the clean-up
    Image.fromarray(enhanced).save(args.out)
    print(f"wrote {args.out} ({enhanced.shape[1]}x{enhanced.shape[0]})")
    if args.side_by_side:
        side_by_side(lr, enhanced, [to_array(r) for r in args.ref], args.side_by_side)
        print(f"wrote {args.side_by_side}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m fsrst_client",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("command", choices=["enhance", "info", "health"])
    parser.add_argument("--server", default="localhost:50051", help="host:port")
    parser.add_argument("--timeout_s", type=float, default=30.0, help="deadline of each call")
    parser.add_argument("--frame", help="enhance: the low-resolution face (any image file)")
    parser.add_argument("--ref", action="append", default=[],
                        help="enhance: a reference photo of the same person (repeat)")
    parser.add_argument("--identity", help="enhance: register under this id and keep it")
    parser.add_argument("--encoding", choices=["rgb8", "jpeg"], default="rgb8",
                        help="how images are sent (jpeg: JPEG files as they are)")
    parser.add_argument("--output", choices=["rgb8", "jpeg"], default="rgb8",
                        help="how the server answers")
    parser.add_argument("--out", help="enhance: the enhanced face (PNG, or any PIL format)")
    parser.add_argument("--side_by_side", help="enhance: also write LR|bicubic|enhanced|refs")
    parser.add_argument("--api_key", default=os.environ.get("FSRST_API_KEY"),
                        help="API key (default: $FSRST_API_KEY, which keeps it out of ps)")
    parser.add_argument("--tls_ca", help="PEM CA of the server's certificate: use TLS")
    parser.add_argument("--tls_cert", help="PEM client certificate (servers that require mTLS)")
    parser.add_argument("--tls_key", help="PEM private key of --tls_cert")
    args = parser.parse_args(argv)
    if args.command == "enhance" and not (args.frame and args.out):
        parser.error("enhance needs --frame and --out")
    try:
        with FsrstClient(args.server, timeout_s=args.timeout_s, encoding=args.encoding,
                         api_key=args.api_key, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                         tls_key=args.tls_key) as client:
            if args.command == "health":
                status = client.health()
                print(status)
                return 0 if status == "SERVING" else 2
            if args.command == "info":
                info = client.server_info()
                for field in info.DESCRIPTOR.fields:  # defaults too: model_trained: False
                    print(f"{field.name}: {getattr(info, field.name)}")
                return 0
            enhance(client, args)
    except FsrstError as error:
        print(f"fsrst_client: {error}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"fsrst_client: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
