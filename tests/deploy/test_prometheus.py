"""deploy/prometheus for real: promtool checks the files, Debian's prometheus scrapes a
running fsrst_server with them (1 s intervals), fsrst_bench drives frames through it, and
the frames/s recording rule read back from prometheus' HTTP API matches the server's
own counter."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request

import pytest
import yaml

from deploy_util import DEPLOY
from server_process import (BENCH_BIN, free_port, histogram_buckets, histogram_quantile_bound,
                            read_metric, start_small_server, wait_for)

PROMETHEUS_DIR = os.path.join(DEPLOY, "prometheus")
RULE_WINDOW_S = 60  # the rules' rate window, [1m]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: tools/install_deps.sh installs prometheus")
    return path


def test_promtool_accepts_config_and_rules():
    promtool = tool("promtool")
    for args in (["check", "config", os.path.join(PROMETHEUS_DIR, "prometheus.yml")],
                 ["check", "rules", os.path.join(PROMETHEUS_DIR, "fsrst_rules.yml")]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_rules_read_only_what_the_server_exports(exported_metric_families):
    with open(os.path.join(PROMETHEUS_DIR, "fsrst_rules.yml")) as f:
        rules = [rule for group in yaml.safe_load(f)["groups"] for rule in group["rules"]]
    for rule in rules:
        # raw series only: recorded names (level:metric:operation) contain colons
        for name in re.findall(r"(?<![\w:])(fsrst_\w+)(?![\w:])", rule["expr"]):
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in exported_metric_families or family in exported_metric_families, (
                f"rule {rule['record']} reads {name}, which fsrst_server does not export")


def query(port: int, promql: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture
def server():
    s = start_small_server()
    yield s
    s.stop()


@pytest.fixture
def prometheus(server):
    """Debian's prometheus with deploy/prometheus's files, scraping `server` every second."""
    binary = tool("prometheus")
    work = tempfile.mkdtemp(prefix="fsrst_prometheus_")
    with open(os.path.join(PROMETHEUS_DIR, "prometheus.yml")) as f:
        config = yaml.safe_load(f)
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [os.path.join(PROMETHEUS_DIR, path) for path in config["rule_files"]]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{server.metrics_port}"]}]
    with open(os.path.join(work, "prometheus.yml"), "w") as f:
        yaml.safe_dump(config, f)
    port = free_port()
    log = open(os.path.join(work, "prometheus.log"), "w")
    proc = subprocess.Popen([binary, f"--config.file={work}/prometheus.yml",
                             f"--storage.tsdb.path={work}/data",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: proc.poll() is None and _scraped(port, job["job_name"]), 60,
                 "prometheus to scrape fsrst_server", poll_s=0.25)
        yield port, job["job_name"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def _scraped(port: int, job: str) -> bool:
    try:
        result = query(port, f'up{{job="{job}"}}')
    except OSError:
        return False
    return bool(result) and result[0]["value"][1] == "1"


def test_frames_per_second_rule_matches_the_server_counter(server, prometheus):
    port, job = prometheus
    before = read_metric(server, "fsrst_frames_enhanced_total", required=True)
    bench = subprocess.run(
        [BENCH_BIN, f"--server=127.0.0.1:{server.port}", "--rpc=stream", "--concurrency=2",
         "--identities=4", "--duration_s=8", "--warmup_s=0", "--progress=false"],
        capture_output=True, text=True, timeout=120)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    after = read_metric(server, "fsrst_frames_enhanced_total", required=True)
    assert after > before
    # the server is idle now: wait until prometheus holds its final count, then for a rule
    # evaluation after that scrape (the recorded sample's own timestamp, not a fixed sleep)
    wait_for(lambda: [r for r in query(port, "fsrst_frames_enhanced_total")
                      if float(r["value"][1]) == after], 60, "the last scrape", poll_s=0.25)
    scraped_at = max(float(r["value"][1]) for r in query(
        port, f'timestamp(fsrst_frames_enhanced_total{{job="{job}"}})'))
    wait_for(lambda: [
        r for r in query(port, f'timestamp(instance:fsrst_frames_enhanced:rate1m{{job="{job}"}})')
        if float(r["value"][1]) > scraped_at], 60, "a rule evaluation after the last scrape",
        poll_s=0.25)
    (series,) = query(port, f'instance:fsrst_frames_enhanced:rate1m{{job="{job}"}}')
    frames_per_s = float(series["value"][1])
    # Every frame of the load fell inside the rule's 1m window: rate() is the increase
    # over the window (extrapolated by at most a few scrape intervals) per second.
    expected = (after - before) / RULE_WINDOW_S
    print(f"rule {frames_per_s:.3f} frames/s, counter {after - before:.0f} frames / 60 s = "
          f"{expected:.3f}")
    assert 0.9 * expected <= frames_per_s <= 1.25 * expected, (frames_per_s, expected)
    (total,) = query(port, f'job:fsrst_frames_enhanced:rate1m{{job="{job}"}}')
    assert float(total["value"][1]) == pytest.approx(frames_per_s)

    latency = {r["metric"]["rpc"]: float(r["value"][1])
               for r in query(port, "job_rpc:fsrst_request_duration_seconds:p99_1m")
               if r["value"][1] != "NaN"}
    p50 = {r["metric"]["rpc"]: float(r["value"][1])
           for r in query(port, "job_rpc:fsrst_request_duration_seconds:p50_1m")
           if r["value"][1] != "NaN"}
    assert latency, "no p99 latency recorded"
    for rpc, p99 in latency.items():
        assert 0 < p50[rpc] <= p99, (rpc, p50[rpc], p99)
    # The queue-depth rule is the largest depth prometheus scraped in the last minute.
    (depth,) = query(port, f'instance:fsrst_queue_depth:max1m{{job="{job}"}}')
    (samples,) = query(port, f'fsrst_queue_depth{{job="{job}"}}[1m]')
    scraped = [float(v) for _, v in samples["values"]]
    assert float(depth["value"][1]) == max(scraped)
    # The histogram rules: each quantile lies in the bucket the server's own histogram puts
    # it in (everything the server observed is inside the rules' 1m window).
    for rule, family, q in (("job:fsrst_inference_duration_seconds:p50_1m",
                             "fsrst_inference_duration_seconds", 0.5),
                            ("job:fsrst_queue_duration_seconds:p99_1m",
                             "fsrst_queue_duration_seconds", 0.99)):
        (value,) = query(port, f'{rule}{{job="{job}"}}')
        buckets = histogram_buckets(server, family)
        upper = histogram_quantile_bound({}, buckets, q)
        lower = max([b for b in buckets if b < upper], default=0.0)
        assert lower <= float(value["value"][1]) <= upper, (rule, value, lower, upper)
