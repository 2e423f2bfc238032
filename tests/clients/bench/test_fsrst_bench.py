"""fsrst_bench works: short runs against a real server and in --raw mode give sane JSON."""

import json
import os
import subprocess

import pytest

from server_process import BENCH_BIN, small_model, start_small_server


@pytest.fixture(scope="module")
def server():
    s = start_small_server("--max_batch_size=4")
    yield s
    s.stop()


def bench(tmp_path, *args):
    out = tmp_path / "result.json"
    result = subprocess.run([BENCH_BIN, "--progress=false", "--warmup_s=0.5", "--duration_s=2",
                             f"--json_out={out}", *args], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text()), result.stdout


@pytest.mark.parametrize("args", [
    ["--mode=closed", "--rpc=unary", "--concurrency=2", "--references=cached"],
    ["--mode=closed", "--rpc=stream", "--concurrency=2", "--references=inline"],
    ["--mode=open", "--rate=10", "--references=none", "--encoding=jpeg"],
])
def test_bench_against_a_server_reports_sane_json(server, tmp_path, args):
    data, stdout = bench(tmp_path, f"--server=127.0.0.1:{server.port}", "--identities=3", *args)
    assert data["errors"] == {}, data["error_examples"]
    assert data["error_latency_ms"] == {} and data["error_examples"] == {}
    assert data["frames_ok"] > 0
    assert data["throughput_fps"] == pytest.approx(data["frames_ok"] / data["duration_s"])
    latency = data["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert len(data["latency_cdf_ms"]) == 101
    assert data["config"]["model_name"] == "fsrst_x4_small"
    assert "frames/s" in stdout
    # Open loop also reports how late the generator issued each call; closed loop has no
    # schedule to be late against.
    if "--mode=open" in args:
        lag = data["send_lag_ms"]
        assert lag["count"] > 0 and 0 <= lag["p50"] <= lag["p99"] <= lag["max"]
    else:
        assert "send_lag_ms" not in data


def test_bench_counts_errors_by_status_code(server, tmp_path):
    # A 1 ms deadline cannot be met by a model that takes tens of ms per frame.
    data, stdout = bench(tmp_path, f"--server=127.0.0.1:{server.port}", "--mode=open",
                         "--rate=20", "--references=none", "--deadline_ms=1")
    assert data["frames_ok"] == 0
    assert list(data["errors"]) == ["DEADLINE_EXCEEDED"]
    assert data["errors"]["DEADLINE_EXCEEDED"] > 10
    assert "DEADLINE_EXCEEDED" in stdout
    # The first message of each code is kept, so a run's errors can be read, not just counted.
    assert data["error_examples"]["DEADLINE_EXCEEDED"] == "Deadline Exceeded"
    assert "first DEADLINE_EXCEEDED: Deadline Exceeded" in stdout
    # Every failed call was timed: from its scheduled arrival to the error, at least the 1 ms
    # deadline.
    timing = data["error_latency_ms"]["DEADLINE_EXCEEDED"]
    assert timing["timed"] == data["errors"]["DEADLINE_EXCEEDED"]
    assert 1.0 <= timing["p50"] <= timing["p99"] <= timing["max"]
    # Timed again from the moment each call left: never longer than from its arrival.
    from_send = timing["from_send"]
    assert from_send["timed"] == timing["timed"]
    assert 1.0 <= from_send["p50"] <= from_send["p99"] <= from_send["max"] <= timing["max"]


def test_raw_mode_runs_the_model_in_process(tmp_path):
    data, stdout = bench(tmp_path, "--raw", f"--model={small_model()}", "--batch_size=2",
                         "--model_threads=1")
    assert data["config"]["raw"] == "true" and data["config"]["batch_size"] == "2"
    assert data["frames_ok"] % 2 == 0 and data["frames_ok"] > 0
    assert stdout.startswith("raw:")


def test_paired_mode_times_a_raw_forward_beside_each_served_call(server, tmp_path):
    data, stdout = bench(tmp_path, f"--server=127.0.0.1:{server.port}", "--mode=paired",
                         f"--model={small_model()}", "--model_threads=1", "--identities=2")
    assert data["errors"] == {}, data["error_examples"]
    assert data["config"]["mode"] == "paired" and data["config"]["paired_model_threads"] == "1"
    raw = data["paired_raw"]
    # One caller, strictly alternating: the window cuts the sequence at most one call apart.
    assert data["frames_ok"] > 0
    assert abs(raw["frames_ok"] - data["frames_ok"]) <= 1
    latency = raw["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert "paired raw forward:" in stdout


def test_paired_mode_refuses_a_different_model_than_the_servers(server, tmp_path):
    result = subprocess.run(
        [BENCH_BIN, f"--server=127.0.0.1:{server.port}", "--mode=paired", "--progress=false",
         "--model=" + os.path.join(os.path.dirname(small_model()), "fsrst_x4.pt")],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "--model is fsrst_x4 but the server serves fsrst_x4_small" in result.stderr


def test_unreachable_server_fails_clearly(tmp_path):
    result = subprocess.run([BENCH_BIN, "--server=127.0.0.1:1",
                             "--progress=false"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "GetServerInfo on 127.0.0.1:1" in result.stderr
