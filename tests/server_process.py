"""Runs the real fsrst_server binary for Python tests, and makes the generated
gRPC stubs importable (top-level modules fsrst_pb2, health_pb2, ...)."""

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BUILD = os.environ.get("FSRST_BUILD_DIR", os.path.join(ROOT, "build"))
SERVER_BIN = os.path.join(BUILD, "server", "fsrst_server")
BENCH_BIN = os.path.join(BUILD, "clients", "bench", "fsrst_bench")


def _generate_stubs() -> str:
    out = tempfile.mkdtemp(prefix="fsrst_pb_")
    # Top-level modules (fsrst_pb2, health_pb2): the package paths fsrst.v1 and
    # grpc.health.v1 would clash with the model's fsrst package and with grpcio.
    for folder, proto in (("fsrst/v1", "fsrst.proto"), ("grpc/health/v1", "health.proto")):
        subprocess.run(["protoc", f"--proto_path={ROOT}/proto/{folder}", f"--python_out={out}",
                        f"--grpc_out={out}", "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
                        proto], check=True)
    return out


if "fsrst_pb2" not in sys.modules:
    sys.path.insert(0, _generate_stubs())


class ServerProcess:
    """fsrst_server on free ports; `port` and `metrics_port` read from its log line."""

    def __init__(self, model: str, *extra: str, wait: bool = True):
        self.log_path = tempfile.mktemp(prefix="fsrst_server_", suffix=".log")
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(
            [SERVER_BIN, f"--model={model}", "--host=127.0.0.1", "--port=0", "--metrics_port=0",
             "--device=cpu", *extra], stdout=self.log, stderr=subprocess.STDOUT)
        self.port = None
        self.metrics_port = None
        if wait:
            self.wait_serving()

    def output(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def wait_serving(self, timeout: float = 120.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            match = re.search(r"SERVING .* on 127\.0\.0\.1:(\d+), metrics on port (-?\d+)",
                              self.output())
            if match:
                self.port, self.metrics_port = int(match.group(1)), int(match.group(2))
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"fsrst_server exited {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        raise TimeoutError(f"fsrst_server did not start:\n{self.output()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def small_model() -> str:
    return os.path.join(ROOT, "model", "weights", "fsrst_x4_small.pt")


def model_info(server: ServerProcess) -> dict:
    """The labels of fsrst_model_info: model, version, device, instances, threads, ..."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                timeout=10) as page:
        text = page.read().decode()
    match = re.search(r"^fsrst_model_info\{(.*)\} ", text, re.M)
    if not match:
        raise RuntimeError("no fsrst_model_info on /metrics")
    return dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))


def histogram_buckets(server: ServerProcess, name: str) -> dict:
    """The cumulative bucket counts of an unlabelled histogram: {upper bound: count}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                timeout=10) as page:
        text = page.read().decode()
    return {float(le): float(count) for le, count in
            re.findall(rf'^{name}_bucket\{{le="([^"]+)"\}} (\S+)$', text, re.M)}


def histogram_quantile_bound(before: dict, after: dict, q: float) -> float:
    """The upper bound of the bucket holding quantile q of what was observed between two
    histogram_buckets readings (inf if it lies beyond the last finite bucket). Raises
    ValueError when nothing was observed in between: there is no quantile to bound."""
    if not after:
        raise ValueError("histogram_quantile_bound: the histogram is not on /metrics")
    bounds = sorted(after)
    total = after[bounds[-1]] - before.get(bounds[-1], 0.0)
    if total <= 0:
        raise ValueError("histogram_quantile_bound: nothing was observed between the two "
                         "readings")
    for bound in bounds:
        if after[bound] - before.get(bound, 0.0) >= q * total:
            return bound
    return float("inf")


def read_metric(server: ServerProcess, name: str, **labels) -> float:
    """The value of one sample on the server's /metrics page (0 if absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                timeout=10) as page:
        text = page.read().decode()
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")) == labels:
            return float(match.group(2))
    return 0.0
