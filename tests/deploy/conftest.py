"""Fixtures of the deploy tests: real fsrst_server processes (fsrst_x4_small on one
model thread, so three replicas fit on two cores), their /metrics pages, the server's
flag defaults read from `fsrst_server --help`, and deploy/'s YAML files."""

import os
import re
import subprocess
import sys
import urllib.request

import pytest
import yaml

from server_process import ROOT, SERVER_BIN, ServerProcess, small_model

sys.path.insert(0, os.path.join(ROOT, "clients", "python"))

DEPLOY = os.path.join(ROOT, "deploy")


def require_server_binary() -> None:
    if not os.path.exists(SERVER_BIN):
        pytest.fail(f"{SERVER_BIN} is not built; run the test command from README.md")


def start_small_server(*flags: str, wait: bool = True) -> ServerProcess:
    """fsrst_server with fsrst_x4_small on one model thread, on free ports; with
    wait=False call wait_serving() before using its ports."""
    require_server_binary()
    return ServerProcess(small_model(), "--model_threads=1", *flags, wait=wait)


def metrics_text(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                timeout=10) as page:
        return page.read().decode()


def metric_value(server: ServerProcess, name: str) -> float:
    """The value of an unlabelled sample on the server's /metrics page."""
    match = re.search(rf"^{name} (\S+)$", metrics_text(server), re.MULTILINE)
    if not match:
        raise AssertionError(f"{name} is not on the /metrics page of port {server.metrics_port}")
    return float(match.group(1))


def load_yaml(relative_path: str):
    """Every document of a file under deploy/."""
    with open(os.path.join(DEPLOY, relative_path)) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


@pytest.fixture(scope="session")
def server_flag_defaults() -> dict:
    """{flag: default} as `fsrst_server --help` prints them (numbers as int)."""
    require_server_binary()
    text = subprocess.run([SERVER_BIN, "--help"], capture_output=True, text=True).stdout
    defaults = {}
    for name, value in re.findall(r"--(\w+) \(.*?\);\s*default:\s*([^;]*);", text, re.DOTALL):
        value = value.strip().strip('"')
        defaults[name] = int(value) if re.fullmatch(r"-?\d+", value) else value
    for flag in ("port", "metrics_port", "drain_timeout_s", "model"):
        assert flag in defaults, f"--{flag} not found in fsrst_server --help:\n{text}"
    return defaults


@pytest.fixture(scope="session")
def exported_metric_families() -> set:
    """The metric family names a running fsrst_server exports (its # TYPE lines)."""
    server = start_small_server()
    try:
        text = metrics_text(server)
    finally:
        server.stop()
    return set(re.findall(r"^# TYPE (\w+) ", text, re.MULTILINE))
