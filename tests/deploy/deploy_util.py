"""Helpers of the deploy tests: real fsrst_server processes (fsrst_x4_small on one model
thread, so three replicas fit on two cores), their /metrics pages, nginx running
deploy/nginx/fsrst-grpc.conf in front of them, and deploy/'s YAML files.
A module of its own, not conftest.py: with several conftest.py files in the suite,
`from conftest import ...` can find another folder's."""

import os
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

# free_port, require_server_binary and start_small_server are re-exported: the deploy tests
# import them from here.
from server_process import (ROOT, free_port, require_server_binary,  # noqa: F401
                            start_small_server)

sys.path.insert(0, os.path.join(ROOT, "clients", "python"))

DEPLOY = os.path.join(ROOT, "deploy")


def serving_replicas(count: int):
    """Yields `count` fsrst_x4_small servers, started side by side (they load in parallel)
    and each SERVING; stops them afterwards. For a pytest fixture to `yield from`."""
    servers = [start_small_server(wait=False) for _ in range(count)]
    try:
        for server in servers:
            server.wait_serving()
        yield servers
    finally:
        for server in servers:
            server.stop()


def load_yaml(relative_path: str):
    """Every document of a file under deploy/."""
    with open(os.path.join(DEPLOY, relative_path)) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


class Nginx:
    """nginx in the foreground with deploy/nginx/fsrst-grpc.conf, all files in a temp dir;
    server_parameters follow each replica's `server` line."""

    def __init__(self, upstream_ports, server_parameters="max_fails=1 fail_timeout=30s"):
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            pytest.fail("nginx is missing: tools/install_deps.sh installs it")
        self.prefix = tempfile.mkdtemp(prefix="fsrst_nginx_")
        self.port = free_port()
        with open(os.path.join(DEPLOY, "nginx", "fsrst-grpc.conf")) as f:
            template = string.Template(f.read())
        # safe_substitute: nginx's own $variables stay as they are
        conf = template.safe_substitute(
            prefix=self.prefix, listen=f"127.0.0.1:{self.port}",
            servers="\n".join(f"    server 127.0.0.1:{port} {server_parameters};"
                              for port in upstream_ports))
        assert "${" not in conf, "a placeholder of fsrst-grpc.conf was not filled in"
        conf_path = os.path.join(self.prefix, "nginx.conf")
        with open(conf_path, "w") as f:
            f.write(conf)
        self.error_log = os.path.join(self.prefix, "error.log")
        check = subprocess.run([binary, "-t", "-p", self.prefix, "-c", conf_path, "-e",
                                self.error_log], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([binary, "-p", self.prefix, "-c", conf_path, "-e",
                                      self.error_log])
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"nginx did not start:\n{self.errors()}")
                time.sleep(0.05)

    def errors(self) -> str:
        with open(self.error_log) as f:
            return f.read()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.prefix, ignore_errors=True)
