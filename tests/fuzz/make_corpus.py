#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/.

Seeds are real face photos from the shared data set (128x128 PNGs) encoded the
ways clients send them (JPEG at 32x32 and 128x128, 4:2:0 and 4:4:4, grayscale,
progressive, odd sizes, RGB8), a few broken ones (truncated, bit-flipped, no
image), and serialized EnhanceRequest / RegisterReferencesRequest messages.
The layouts are the ones the fuzzers' headers describe. Deterministic: run it
again and the files are the same.

Usage: /usr/bin/python3 tests/fuzz/make_corpus.py [faces_dir]
"""

import hashlib
import io
import os
import struct
import subprocess
import sys
import tempfile

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FACES = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data/faces/val"
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")


def face(identity_index, photo, size):
    identity = sorted(os.listdir(FACES))[identity_index]
    image = Image.open(os.path.join(FACES, identity, f"{photo}.png")).convert("RGB")
    return image.resize(size, Image.BICUBIC) if image.size != size else image


def jpeg(image, **options):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def write(target, name, data):
    os.makedirs(os.path.join(OUT, target), exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:8]
    with open(os.path.join(OUT, target, f"{name}-{digest}"), "wb") as f:
        f.write(data)


def codec_input(rgb8, width, height, data):
    return bytes([1 if rgb8 else 0]) + struct.pack("<HH", width, height) + data


def images():
    """(name, rgb8, width, height, data) as a request would carry them."""
    f32 = face(0, 0, (32, 32))
    f128 = face(1, 1, (128, 128))
    good = jpeg(f32, quality=90)
    out = [
        ("jpeg32", False, 0, 0, good),
        ("jpeg32_sized", False, 32, 32, jpeg(face(2, 2, (32, 32)), quality=75, subsampling=0)),
        ("jpeg128_420", False, 0, 0, jpeg(f128, quality=60, subsampling=2)),
        ("jpeg128_progressive", False, 0, 0, jpeg(f128, quality=50, progressive=True)),
        ("jpeg_gray", False, 0, 0, jpeg(face(3, 3, (32, 32)).convert("L"), quality=85)),
        ("jpeg_wide", False, 0, 0, jpeg(face(4, 4, (48, 24)), quality=80)),
        ("jpeg_odd", False, 0, 0, jpeg(face(5, 5, (33, 31)), quality=80, subsampling=1)),
        ("jpeg_1x1", False, 0, 0, jpeg(Image.new("RGB", (1, 1), (200, 10, 30)))),
        ("jpeg_wrong_size", False, 31, 32, good),
        ("jpeg_truncated", False, 0, 0, good[: len(good) // 2]),
        ("jpeg_no_eoi", False, 0, 0, good[:-2]),
        ("jpeg_bitflip", False, 0, 0, good[:300] + bytes([good[300] ^ 0x55]) + good[301:]),
        ("jpeg_soi_only", False, 0, 0, b"\xff\xd8\xff\xd9"),
        ("rgb8_32", True, 32, 32, f32.tobytes()),
        ("rgb8_5x3", True, 5, 3, face(6, 6, (5, 3)).tobytes()),
        ("rgb8_short", True, 4, 4, bytes(47)),
    ]
    cmyk = io.BytesIO()
    face(7, 7, (16, 16)).convert("CMYK").save(cmyk, "JPEG")
    out.append(("jpeg_cmyk", False, 0, 0, cmyk.getvalue()))
    return out


def proto_module():
    """fsrst_pb2, generated from proto/ with Debian's protoc."""
    stubs = tempfile.mkdtemp(prefix="fsrst_corpus_")
    subprocess.run(["protoc", f"--proto_path={ROOT}/proto", f"--python_out={stubs}",
                    f"{ROOT}/proto/fsrst/v1/fsrst.proto"], check=True)
    sys.path.insert(0, stubs)
    from fsrst.v1 import fsrst_pb2  # pylint: disable=import-outside-toplevel
    return fsrst_pb2


def main():
    for name, rgb8, width, height, data in images():
        write("image_codec", name, codec_input(rgb8, width, height, data))

    pb = proto_module()
    by_name = {name: (rgb8, width, height, data) for name, rgb8, width, height, data in images()}

    def image(name):
        rgb8, width, height, data = by_name[name]
        return pb.Image(encoding=pb.ENCODING_RGB8 if rgb8 else pb.ENCODING_JPEG, data=data,
                        width=width, height=height)

    enhance = [
        ("frame_jpeg", pb.EnhanceRequest(identity_id="user-42@tenant:cam_1.v2",
                                          frame=image("jpeg32"), sequence_number=7)),
        ("frame_rgb8_refs", pb.EnhanceRequest(frame=image("rgb8_32"),
                                              references=[image("jpeg_odd"), image("rgb8_5x3")],
                                              jpeg_quality=80, timeout_ms=100)),
        ("frame_wrong_size", pb.EnhanceRequest(identity_id="a", frame=image("jpeg_wide"))),
        ("frame_bad_id", pb.EnhanceRequest(identity_id="bad id!", frame=image("jpeg_gray"))),
        ("frame_unspecified", pb.EnhanceRequest(frame=pb.Image(data=b"\xff\xd8"))),
    ]
    register = [
        ("refs_two", pb.RegisterReferencesRequest(
            identity_id="alice", references=[image("jpeg128_420"), image("jpeg_wide")])),
        ("refs_rgb8", pb.RegisterReferencesRequest(identity_id="b.2",
                                                   references=[image("rgb8_5x3")])),
        ("refs_none", pb.RegisterReferencesRequest(identity_id="x" * 129)),
        ("refs_nine", pb.RegisterReferencesRequest(identity_id="c",
                                                   references=[image("jpeg_1x1")] * 9)),
        ("refs_bad_encoding", pb.RegisterReferencesRequest(
            identity_id="d", references=[image("jpeg32"), pb.Image(encoding=7, data=b"x")])),
        ("refs_truncated", pb.RegisterReferencesRequest(
            identity_id="e", references=[image("jpeg_truncated")])),
    ]
    for name, message in enhance:
        write("request_validation", name, b"\x00" + message.SerializeToString())
    for name, message in register:
        write("request_validation", name, b"\x01" + message.SerializeToString())


if __name__ == "__main__":
    main()
