"""A real redis-server (Debian's /usr/bin/redis-server) on a free port in a temp dir, for the
shared-reference-store tests, and redis-cli to look at what it holds. No mocks."""

import os
import shutil
import socket
import subprocess
import tempfile
import time

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProcess:
    """redis-server on 127.0.0.1:<free port>. persist=False (the default): --save '' and
    --appendonly no, so a restart comes back empty; persist=True: an append-only file fsynced
    on every write, so a restart comes back with everything (as a production Redis would)."""

    def __init__(self, persist: bool = False, password: str = ""):
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="fsrst_redis_")
        self.persist = persist
        self.password = password
        self.proc = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", self.dir, "--loglevel", "warning"]
        args += (["--appendonly", "yes", "--appendfsync", "always"] if self.persist
                 else ["--appendonly", "no"])
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.cli("PING").strip() in (b"PONG",):
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def cli(self, *args: str) -> bytes:
        """redis-cli --raw <args>: the reply's bytes without the trailing newline."""
        env = dict(os.environ)
        if self.password:
            env["REDISCLI_AUTH"] = self.password
        out = subprocess.run([REDIS_CLI, "-p", str(self.port), "--raw", *args],
                             capture_output=True, env=env, timeout=30).stdout
        return out[:-1] if out.endswith(b"\n") else out

    def keys(self, pattern: str = "*") -> list:
        return sorted(k for k in self.cli("--scan", "--pattern", pattern).decode().split("\n") if k)

    def rdb_dump(self, path: str) -> bytes:
        """The whole keyspace as an RDB file, as `redis-cli --rdb` writes a backup."""
        subprocess.run([REDIS_CLI, "-p", str(self.port), "--rdb", path], check=True,
                       capture_output=True, timeout=60)
        with open(path, "rb") as f:
            return f.read()
