"""Runs the real fsrst_server binary for Python tests, and makes the generated
gRPC stubs importable (top-level modules fsrst_pb2, health_pb2, ...). The helpers every
suite shares live here, one each: start_small_server, rgb8, wait_for, scrape_metrics and
read_metric, histogram_buckets. Nothing here holds state between calls; each helper is
safe to call from any thread."""

import os
import re
import socket
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

import fsrst_pb2  # noqa: E402  (generated just above)


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a process that must be told
    its port rather than pick one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_server_binary() -> None:
    """Fails the calling test (pytest.fail) when fsrst_server is not built."""
    if not os.path.exists(SERVER_BIN):
        import pytest  # only tests call this; the load scripts import this module too
        pytest.fail(f"{SERVER_BIN} is not built; run the test command from README.md")


def start_small_server(*flags: str, wait: bool = True) -> ServerProcess:
    """fsrst_server with fsrst_x4_small on one model thread (then `flags`), on free ports;
    with wait=False call wait_serving() before using its ports. The caller owns the process
    and stops it."""
    require_server_binary()
    return ServerProcess(small_model(), "--model_threads=1", *flags, wait=wait)


def rgb8(image, rng=None) -> "fsrst_pb2.Image":
    """An ENCODING_RGB8 Image: of `image`, an HxWx3 uint8 array, or, when `image` is a size
    (n for n x n, or (height, width)), of uniformly random pixels drawn from `rng`."""
    if isinstance(image, (int, tuple)):
        height, width = (image, image) if isinstance(image, int) else image
        if rng is None:
            raise ValueError("rgb8: random pixels of a size need an rng")
        image = rng.integers(0, 256, (height, width, 3), dtype="uint8")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != "uint8":
        raise ValueError(f"rgb8: expected an HxWx3 uint8 array, got {image.shape} {image.dtype}")
    height, width, _ = image.shape
    return fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_RGB8, data=image.tobytes(), width=width,
                           height=height)


def wait_for(condition, timeout: float, what, poll_s: float = 0.02):
    """Polls condition() every poll_s seconds until it returns a truthy value, and returns
    that value. After `timeout` seconds raises TimeoutError naming `what` (a string, or a
    callable evaluated then) and condition's last value. An exception condition() raises
    ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise TimeoutError(f"timed out after {timeout} s waiting for {described}; "
                               f"last value {value!r}")
        time.sleep(poll_s)


def scrape_metrics(server: ServerProcess, host: str = "127.0.0.1",
                   timeout: float = 10.0) -> str:
    """The server's /metrics page (Prometheus text), fetched from `host`."""
    with urllib.request.urlopen(f"http://{host}:{server.metrics_port}/metrics",
                                timeout=timeout) as page:
        return page.read().decode()


def model_info(server: ServerProcess) -> dict:
    """The labels of fsrst_model_info: model, version, device, instances, threads, ..."""
    text = scrape_metrics(server)
    match = re.search(r"^fsrst_model_info\{(.*)\} ", text, re.M)
    if not match:
        raise RuntimeError("no fsrst_model_info on /metrics")
    return dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))


def histogram_buckets(server: ServerProcess, name: str) -> dict:
    """The cumulative bucket counts of an unlabelled histogram: {upper bound: count}."""
    text = scrape_metrics(server)
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


def read_metric(server: ServerProcess, name: str, *, required: bool = False,
                **labels) -> float:
    """The value of the sample `name` with exactly `labels` on the server's /metrics page.
    An absent sample reads 0 (prometheus-cpp shows a labelled counter only once it moved),
    or, with required=True, raises AssertionError."""
    for line in scrape_metrics(server).splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")) == labels:
            return float(match.group(2))
    if required:
        raise AssertionError(f"{name}{labels or ''} is not on the /metrics page of port "
                             f"{server.metrics_port}")
    return 0.0
