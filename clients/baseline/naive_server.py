"""The baseline a user might write instead of fsrst-serve: a short Python gRPC
server (grpcio + torch) for the same proto and the same TorchScript file. Each
request runs its own forward of one frame and encodes its references again
(RegisterReferences only stores the decoded photos): no feature cache, no
batching. Kept honest: inference mode, torch threads = cores, the same
reference normalisation as fsrst_server, so both compute the same faces.

    /usr/bin/python3 clients/baseline/naive_server.py --model model/weights/fsrst_x4.pt --port 50061
"""

import argparse
import functools
import io
import json
import math
import os
import sys
import threading
from concurrent import futures

import grpc
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from fsrst_client._stubs import fsrst_pb2 as pb, fsrst_pb2_grpc as pb_grpc  # noqa: E402


class BadRequest(Exception):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotRegistered(Exception):
    code = grpc.StatusCode.NOT_FOUND


def decode(image, field: str) -> Image.Image:
    try:
        if image.encoding == pb.ENCODING_JPEG:
            return Image.open(io.BytesIO(image.data)).convert("RGB")
        if image.encoding == pb.ENCODING_RGB8 and len(image.data) == image.width * image.height * 3:
            return Image.frombytes("RGB", (image.width, image.height), image.data)
    except Exception as error:  # PIL raises many kinds on bad bytes
        raise BadRequest(f"{field}: {error}")
    raise BadRequest(f"{field}: expected JPEG, or RGB8 of width*height*3 bytes")


@functools.lru_cache(maxsize=64)
def resample_matrix(src: int, dst: int) -> np.ndarray:
    """fsrst_server's resampling of one axis as a dst x src matrix: area average
    when shrinking, bilinear (half-pixel centres, clamped edges) when enlarging."""
    scale = src / dst
    weights = np.zeros((dst, src))
    for i in range(dst):
        if dst < src:
            begin, end = i * scale, min((i + 1) * scale, src)
            for j in range(int(begin), min(math.ceil(end), src)):
                weights[i, j] = max(min(end, j + 1) - max(begin, j), 0.0) / scale
        else:
            x = min(max((i + 0.5) * scale - 0.5, 0.0), src - 1)
            x0 = int(x)
            weights[i, x0] += 1 - (x - x0)
            weights[i, min(x0 + 1, src - 1)] += x - x0
    return weights.astype(np.float32)


def reference_luma(picture: Image.Image, size: int) -> np.ndarray:
    """Centre square, resized to size x size, PIL's YCbCr Y in [0, 1]."""
    side = min(picture.size)
    left, top = (picture.width - side) // 2, (picture.height - side) // 2
    square = picture.crop((left, top, left + side, top + side))
    if side != size:
        rgb = np.asarray(square, np.float32).transpose(2, 0, 1)
        matrix = resample_matrix(side, size)
        resized = matrix @ (rgb @ matrix.T)
        square = Image.fromarray(np.floor(resized + 0.5).clip(0, 255).astype(np.uint8)
                                 .transpose(1, 2, 0))
    return np.asarray(square.convert("YCbCr").getchannel("Y"), np.float32) / 255.0


class NaiveService(pb_grpc.FaceSuperResolutionServicer):
    def __init__(self, model_path: str):
        extra = {"metadata.json": ""}
        self.model = torch.jit.load(model_path, map_location="cpu", _extra_files=extra)
        self.meta = json.loads(extra["metadata.json"])
        self.references = {}  # identity -> decoded reference photos
        self.lock = threading.Lock()

    def GetServerInfo(self, request, context):
        m = self.meta
        return pb.GetServerInfoResponse(
            model_name=m["name"], model_version=m["version"], model_trained=m["trained"],
            device="cpu", lr_size=m["lr_size"], scale=m["scale"],
            reference_size=m["reference_size"], max_references=m["max_references"],
            max_batch_size=1)

    def RegisterReferences(self, request, context):
        if not 1 <= len(request.references) <= self.meta["max_references"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"references: expected 1..{self.meta['max_references']}")
        try:
            photos = [decode(r, f"references[{i}]") for i, r in enumerate(request.references)]
        except BadRequest as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        with self.lock:
            self.references[request.identity_id] = photos
        return pb.RegisterReferencesResponse(reference_count=len(photos))

    def DeleteReferences(self, request, context):
        with self.lock:
            if self.references.pop(request.identity_id, None) is None:
                context.abort(grpc.StatusCode.NOT_FOUND, "identity_id: not registered")
        return pb.DeleteReferencesResponse()

    def enhance(self, request) -> pb.EnhanceResponse:
        """One frame; raises BadRequest or NotRegistered."""
        if request.identity_id:
            with self.lock:
                photos = self.references.get(request.identity_id)
            if photos is None:
                raise NotRegistered("identity_id: not registered; register again")
        else:
            photos = [decode(r, f"references[{i}]") for i, r in enumerate(request.references)]
        frame = decode(request.frame, "frame")
        size = self.meta["lr_size"]
        if frame.size != (size, size):
            raise BadRequest(f"frame: expected {size}x{size}, got {frame.width}x{frame.height}")
        lr = torch.from_numpy(np.asarray(frame, np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.inference_mode():
            if photos:
                luma = np.stack([reference_luma(p, self.meta["reference_size"]) for p in photos])
                feats = self.model.encode_references(torch.from_numpy(luma)[:, None])[None]
            else:
                feats = torch.zeros(1, 0, *self.meta["feature_shape"])
            out = self.model(lr, feats, torch.ones(feats.shape[:2], dtype=torch.bool))
        pixels = (out[0].permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
        side = pixels.shape[0]
        image = pb.Image(encoding=pb.ENCODING_RGB8, data=pixels.tobytes(), width=side, height=side)
        if request.output_encoding == pb.ENCODING_JPEG or (
                request.output_encoding == pb.ENCODING_UNSPECIFIED
                and request.frame.encoding == pb.ENCODING_JPEG):
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "JPEG", quality=request.jpeg_quality or 95,
                                       subsampling=0)
            image = pb.Image(encoding=pb.ENCODING_JPEG, data=buffer.getvalue(), width=side,
                             height=side)
        return pb.EnhanceResponse(image=image, sequence_number=request.sequence_number,
                                  batch_size=1)

    def Enhance(self, request, context):
        try:
            return self.enhance(request)
        except (BadRequest, NotRegistered) as error:
            context.abort(error.code, str(error))

    def EnhanceStream(self, requests, context):
        for request in requests:  # one at a time, in order
            try:
                yield self.enhance(request)
            except (BadRequest, NotRegistered) as error:
                yield pb.EnhanceResponse(
                    sequence_number=request.sequence_number,
                    error=pb.FrameError(code=error.code.value[0], message=str(error)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="TorchScript file (model/weights/*.pt)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50061, help="0 picks a free port")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads; 0 = every core")
    parser.add_argument("--workers", type=int, default=16,
                        help="gRPC handler threads, i.e. requests computed at once")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         options=[("grpc.max_receive_message_length", 8 << 20)])
    pb_grpc.add_FaceSuperResolutionServicer_to_server(NaiveService(args.model), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()
    print(f"naive_server: serving on port {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
