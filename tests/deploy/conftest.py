"""Fixtures of the deploy tests: the server's flag defaults read from `fsrst_server --help`
and the metric families a running server exports. Helpers are in deploy_util.py
and server_process.py."""

import re
import subprocess

import pytest

from server_process import SERVER_BIN, require_server_binary, scrape_metrics, start_small_server


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
        text = scrape_metrics(server)
    finally:
        server.stop()
    return set(re.findall(r"^# TYPE (\w+) ", text, re.MULTILINE))
