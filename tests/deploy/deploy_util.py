"""Helpers of the deploy tests: real fsrst_server processes (fsrst_x4_small on one model
thread, so three replicas fit on two cores), their /metrics pages, and deploy/'s YAML files.
A module of its own, not conftest.py: with several conftest.py files in the suite,
`from conftest import ...` can find another folder's."""

import os
import re
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
