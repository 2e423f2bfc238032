"""The generated gRPC modules, made with protoc on first use.

They are top-level modules (fsrst_pb2, health_pb2, ...) generated into
_generated/ beside this file: the proto package paths fsrst.v1 and
grpc.health.v1 would clash with the model's `fsrst` package and with grpcio.
"""

import importlib
import os
import subprocess
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_GENERATED = os.path.join(_HERE, "_generated")
_PROTO_ROOT = os.path.abspath(os.path.join(_HERE, "..", "..", "..", "proto"))


def _generate() -> None:
    os.makedirs(_GENERATED, exist_ok=True)
    for folder, proto in (("fsrst/v1", "fsrst.proto"), ("grpc/health/v1", "health.proto")):
        subprocess.run(["protoc", f"--proto_path={_PROTO_ROOT}/{folder}",
                        f"--python_out={_GENERATED}", f"--grpc_out={_GENERATED}",
                        "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin", proto],
                       check=True)


if not os.path.exists(os.path.join(_GENERATED, "health_pb2_grpc.py")):
    _generate()
if _GENERATED not in sys.path:
    sys.path.insert(0, _GENERATED)

fsrst_pb2 = importlib.import_module("fsrst_pb2")
fsrst_pb2_grpc = importlib.import_module("fsrst_pb2_grpc")
health_pb2 = importlib.import_module("health_pb2")
health_pb2_grpc = importlib.import_module("health_pb2_grpc")
