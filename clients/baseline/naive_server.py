"""The baseline a user might write instead of fsrst-serve: a short Python gRPC
server (grpcio + torch) for the same proto and the same model file. It runs one
frame per forward and encodes the references with every request: no feature
cache, no batching. Kept honest: inference mode, torch threads = cores.

    /usr/bin/python3 clients/baseline/naive_server.py --model model/weights/fsrst_x4.pt --port 50061
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
from concurrent import futures

import grpc
import numpy as np
import torch
from PIL import Image

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def import_stubs():
    out = tempfile.mkdtemp(prefix="naive_pb_")
    subprocess.run(["protoc", f"--proto_path={ROOT}/proto/fsrst/v1", f"--python_out={out}",
                    f"--grpc_out={out}", "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
                    "fsrst.proto"], check=True)
    sys.path.insert(0, out)
    import fsrst_pb2
    import fsrst_pb2_grpc
    return fsrst_pb2, fsrst_pb2_grpc


pb, pb_grpc = import_stubs()


def decode(image) -> Image.Image:
    if image.encoding == pb.ENCODING_JPEG:
        return Image.open(io.BytesIO(image.data)).convert("RGB")
    array = np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 3)
    return Image.fromarray(array)


def reference_luma(image, size: int) -> torch.Tensor:
    picture = decode(image)
    side = min(picture.size)
    left, top = (picture.width - side) // 2, (picture.height - side) // 2
    picture = picture.crop((left, top, left + side, top + side)).resize((size, size),
                                                                        Image.BICUBIC)
    y = np.asarray(picture.convert("YCbCr").split()[0], dtype=np.float32) / 255.0
    return torch.from_numpy(y)[None]


class NaiveService(pb_grpc.FaceSuperResolutionServicer):
    def __init__(self, model_path: str):
        extra = {"metadata.json": ""}
        self.model = torch.jit.load(model_path, map_location="cpu", _extra_files=extra)
        self.meta = json.loads(extra["metadata.json"])
        self.references = {}  # identity -> raw reference images, re-encoded every request
        self.lock = threading.Lock()

    def GetServerInfo(self, request, context):
        m = self.meta
        return pb.GetServerInfoResponse(
            model_name=m["name"], model_version=m["version"], model_trained=m["trained"],
            device="cpu", lr_size=m["lr_size"], scale=m["scale"],
            reference_size=m["reference_size"], max_references=m["max_references"],
            max_batch_size=1)

    def RegisterReferences(self, request, context):
        with self.lock:
            self.references[request.identity_id] = list(request.references)
        return pb.RegisterReferencesResponse(reference_count=len(request.references))

    def DeleteReferences(self, request, context):
        with self.lock:
            self.references.pop(request.identity_id, None)
        return pb.DeleteReferencesResponse()

    def Enhance(self, request, context):
        if request.identity_id:
            with self.lock:
                refs = self.references.get(request.identity_id)
            if refs is None:
                context.abort(grpc.StatusCode.NOT_FOUND, "register the identity first")
        else:
            refs = list(request.references)
        frame = np.asarray(decode(request.frame), dtype=np.float32) / 255.0
        lr = torch.from_numpy(frame).permute(2, 0, 1)[None]
        with torch.inference_mode():
            if refs:
                luma = torch.stack([reference_luma(r, self.meta["reference_size"]) for r in refs])
                feats = self.model.encode_references(luma)[None]
            else:
                feats = torch.zeros(1, 0, *self.meta["feature_shape"])
            out = self.model(lr, feats, torch.ones(feats.shape[:2], dtype=torch.bool))
        pixels = (out[0].permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
        size = pixels.shape[0]
        image = pb.Image(encoding=pb.ENCODING_RGB8, data=pixels.tobytes(), width=size, height=size)
        if request.output_encoding == pb.ENCODING_JPEG:
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
            image = pb.Image(encoding=pb.ENCODING_JPEG, data=buffer.getvalue(), width=size,
                             height=size)
        return pb.EnhanceResponse(image=image, sequence_number=request.sequence_number)

    def EnhanceStream(self, requests, context):
        for request in requests:
            yield self.Enhance(request, context)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=50061)
    parser.add_argument("--workers", type=int, default=16, help="gRPC handler threads")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         options=[("grpc.max_receive_message_length", 8 << 20)])
    pb_grpc.add_FaceSuperResolutionServicer_to_server(NaiveService(args.model), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"naive_server: serving on port {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
