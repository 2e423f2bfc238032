"""The generated gRPC modules of fsrst.v1 and grpc.health.v1.

protoc writes them as top-level modules (fsrst_pb2, fsrst_pb2_grpc, health_pb2,
health_pb2_grpc) into _generated/ beside this file, on first import when they
are missing or older than the .proto files: the proto package paths fsrst.v1
and grpc.health.v1 would clash with the model's `fsrst` package and with grpcio.

They are loaded as fsrst_client._generated.<name>, not from sys.path: the only
trace left in the global module namespace is none at all. While a *_pb2_grpc
module runs its `import fsrst_pb2`, that name points at our module for a moment
and is then restored to whatever it was.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

_HERE = os.path.dirname(os.path.abspath(__file__))
_GENERATED = os.path.join(_HERE, "_generated")
_PROTO_ROOT = os.path.abspath(os.path.join(_HERE, "..", "..", "..", "proto"))
_PROTOS = (("fsrst/v1", "fsrst.proto", "fsrst_pb2"),
           ("grpc/health/v1", "health.proto", "health_pb2"))
_PLUGIN = "/usr/bin/grpc_python_plugin"


def _outputs():
    for _, _, module in _PROTOS:
        yield os.path.join(_GENERATED, module + ".py")
        yield os.path.join(_GENERATED, module + "_grpc.py")


def _stale() -> bool:
    try:
        generated = min(os.path.getmtime(path) for path in _outputs())
    except OSError:
        return True
    sources = [os.path.join(_PROTO_ROOT, folder, proto) for folder, proto, _ in _PROTOS]
    return any(os.path.exists(s) and os.path.getmtime(s) > generated for s in sources)


def _generate() -> None:
    protoc = shutil.which("protoc")
    if protoc is None or not os.path.exists(_PLUGIN):
        raise ImportError("fsrst_client needs protoc and grpc_python_plugin to generate its gRPC "
                          "modules (Debian: protobuf-compiler protobuf-compiler-grpc; "
                          "tools/install_deps.sh installs them)")
    os.makedirs(_GENERATED, exist_ok=True)
    # Generate beside the final folder and rename file by file, so concurrent
    # first imports never see a half-written module.
    scratch = tempfile.mkdtemp(prefix=".protoc-", dir=_GENERATED)
    try:
        for folder, proto, _ in _PROTOS:
            result = subprocess.run(
                [protoc, f"--proto_path={os.path.join(_PROTO_ROOT, folder)}",
                 f"--python_out={scratch}", f"--grpc_out={scratch}",
                 f"--plugin=protoc-gen-grpc={_PLUGIN}", proto], capture_output=True, text=True)
            if result.returncode != 0:
                raise ImportError(f"protoc failed on {folder}/{proto}: {result.stderr.strip()}")
        for path in _outputs():
            os.replace(os.path.join(scratch, os.path.basename(path)), path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _load(name: str, alias: dict):
    qualified = f"{__package__}._generated.{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, os.path.join(_GENERATED, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    saved = {key: sys.modules.get(key) for key in alias}
    sys.modules.update(alias)
    try:
        spec.loader.exec_module(module)
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    sys.modules[qualified] = module
    return module


if _stale():
    if not all(os.path.exists(path) for path in _outputs()) or os.access(_HERE, os.W_OK):
        _generate()

fsrst_pb2 = _load("fsrst_pb2", {})
fsrst_pb2_grpc = _load("fsrst_pb2_grpc", {"fsrst_pb2": fsrst_pb2})
health_pb2 = _load("health_pb2", {})
health_pb2_grpc = _load("health_pb2_grpc", {"health_pb2": health_pb2})
