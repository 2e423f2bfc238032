"""Runs fsrst_bench once and returns its JSON: shared by the benchmark report and the
reliability scripts (tests/reliability)."""

import json
import os
import subprocess
import tempfile


def run_bench(bench_bin: str, args, duration_s: float, warmup_s: float) -> dict:
    """fsrst_bench with `args` for duration_s after warmup_s; prints its summary line."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [bench_bin, "--progress=false", f"--duration_s={duration_s}",
           f"--warmup_s={warmup_s}", f"--json_out={out}", *args]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True,
                                timeout=duration_s * 4 + 120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}\n{result.stdout}{result.stderr}")
        with open(out) as f:
            data = json.load(f)
    finally:
        os.unlink(out)
    print(f"  {' '.join(args)}\n    {result.stdout.strip()}", flush=True)
    return data
