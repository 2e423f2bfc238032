"""The soak and overload scripts work: short runs against the real server give coherent
results. (Their full runs, 10 minutes and 60 s, are in README's Reliability section; speed
and latency goals are judged there, not here.)"""

import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def run(script, tmp_path, *args):
    out = tmp_path / "result.json"
    result = subprocess.run(["/usr/bin/python3", os.path.join(HERE, script),
                             f"--json_out={out}", *args], capture_output=True, text=True,
                            timeout=300)
    return result, json.loads(out.read_text())


def goal(data, name_start):
    (row,) = [g for g in data["goals"] if g[0].startswith(name_start)]
    return row


def test_short_soak_loses_nothing_and_frees_every_identity(tmp_path):
    # The TTL is long enough that the 16 loaded identities, each used every 16 / rate
    # seconds, stay alive on a slow (sanitizer) build too; only the churn's expire.
    result, data = run("soak.py", tmp_path, "--duration_s=14", "--warmup_s=4",
                       "--identity_ttl_s=8", "--churn_period_s=0.3")
    assert data["load"]["frames_ok"] > 0
    assert data["churn"]["registered"] >= 10 and data["churn"]["deleted"] >= 3
    assert data["churn"]["left_to_expire"] >= 3
    # The functional checks; memory growth over seconds says little and is left to the full run.
    for name in ("load errors", "churn errors", "cache after every identity is gone",
                 "expirations counted", "server exit code"):
        assert goal(data, name)[3], (goal(data, name), result.stdout)


def test_short_overload_refuses_the_excess_with_resource_exhausted(tmp_path):
    result, data = run("overload.py", tmp_path, "--duration_s=6", "--max_queue_size=8")
    overload = data["overload"]
    assert overload["errors"].get("RESOURCE_EXHAUSTED", 0) > 0, result.stdout
    assert set(overload["errors"]) == {"RESOURCE_EXHAUSTED"}, result.stdout
    assert overload["frames_ok"] > 0
    assert data["after"]["errors"] == {}
    # The server's refusal histogram counted exactly the refusals the caller saw.
    assert goal(data, "RESOURCE_EXHAUSTED counted by the server")[3], result.stdout
    assert goal(data, "server exit code")[3]
