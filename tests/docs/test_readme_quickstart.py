"""The README's quickstart runs as written: its shell blocks and its Python snippet, in order,
from the repository root, against a server this test starts (the README starts one on
localhost:50051 first; here that address, given as $FSRST_SERVER or written out, is the test
server's, and the output folder /tmp/fsrst is a temporary one)."""

import os
import re
import subprocess
import urllib.request

import pytest

from server_process import ROOT, SERVER_BIN, ServerProcess

README = os.path.join(ROOT, "README.md")
START, END = "<!-- quickstart:start -->", "<!-- quickstart:end -->"


def quickstart_blocks():
    """(language, code) of each fenced block between the quickstart markers, in order."""
    text = open(README).read()
    assert START in text and END in text, "README.md has lost its quickstart markers"
    section = text[text.index(START):text.index(END)]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)


def test_the_quickstart_has_shell_and_python_blocks():
    languages = [language for language, _ in quickstart_blocks()]
    assert "bash" in languages and "python" in languages, languages


@pytest.fixture(scope="module")
def server():
    if not os.path.exists(SERVER_BIN):
        pytest.fail(f"{SERVER_BIN} is not built; run tools/test.sh")
    process = ServerProcess(os.path.join(ROOT, "model", "weights", "fsrst_x4.pt"))
    yield process
    assert process.stop() == 0


def test_the_quickstart_runs_as_written(server, tmp_path):
    address = f"127.0.0.1:{server.port}"
    env = {**os.environ, "HOME": str(tmp_path), "FSRST_SERVER": address}
    env.pop("FSRST_API_KEY", None)
    outputs = []
    for number, (language, code) in enumerate(quickstart_blocks()):
        # The server's address and the output folder are this test's; the rest is as written.
        code = code.replace("localhost:50051", address).replace("/tmp/fsrst", str(tmp_path))
        if language == "bash":
            command = ["bash", "-euo", "pipefail", "-c", code]
        elif language == "python":
            script = tmp_path / f"block{number}.py"
            script.write_text(code)
            command = ["/usr/bin/python3", str(script)]
        else:
            continue
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=600)
        outputs.append(result.stdout)
        assert result.returncode == 0, (
            f"quickstart block {number} ({language}) failed:\n{code}\n--- stdout\n"
            f"{result.stdout}\n--- stderr\n{result.stderr}")
    # What the README says the commands print and write.
    shell = outputs[0]
    assert shell.startswith("SERVING") and "frames: 8, enhanced: 8, errors: 0" in shell, shell
    assert (tmp_path / "side_by_side.png").exists() and len(os.listdir(tmp_path / "alice")) == 8
    assert outputs[1].count("(128, 128, 3)") == 8, outputs[1]


def expand_braces(name: str):
    """fsrst_a_{b,c}_total -> [fsrst_a_b_total, fsrst_a_c_total] (one brace group)."""
    match = re.search(r"\{([^}]*)\}", name)
    if not match:
        return [name]
    return [name[:match.start()] + part + name[match.end():] for part in match.group(1).split(",")]


def test_the_readme_lists_every_metric_family_and_no_other(server):
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                  timeout=10).read().decode()
    exported = set(re.findall(r"^# TYPE (fsrst_\w+) ", text, re.M))
    readme = open(README).read()
    section = readme[readme.index("## Metrics"):readme.index("\n## ", readme.index("## Metrics") + 1)]
    listed = set()
    for token in re.findall(r"`(fsrst_[^`]*)`", section):
        # `name{label,label}` carries labels; `name_{a,b}_total` and `name_{a,b}` are names.
        labels = re.search(r"(?<!_)\{[a-z_,]+\}$", token)
        listed.update(expand_braces(token[:labels.start()] if labels else token))
    assert exported, "no fsrst_ families on /metrics"
    assert exported - listed == set(), "exported but not in the README"
    assert listed - exported == set(), "in the README but not exported"
