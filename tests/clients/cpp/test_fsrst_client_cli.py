"""The C++ CLI (build/clients/cpp/fsrst_client) against a real fsrst_server: a stream
stops at the first error that is not a server going away, and says why once."""

import os
import re
import subprocess

import numpy as np
import pytest
from PIL import Image

from server_process import BUILD

CLIENT_BIN = os.path.join(BUILD, "clients", "cpp", "fsrst_client")
RNG = np.random.default_rng(5)


@pytest.fixture
def cli():
    if not os.path.exists(CLIENT_BIN):
        pytest.fail(f"{CLIENT_BIN} is not built; run the test command from README.md")

    def run(server, *args):
        return subprocess.run([CLIENT_BIN, f"--server=127.0.0.1:{server.port}", *args],
                              capture_output=True, text=True, timeout=120)
    return run


def write_frames(folder, sizes):
    os.makedirs(folder)
    for i, size in enumerate(sizes):
        pixels = RNG.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"f{i:02d}.jpg"), quality=95)


def test_stream_stops_at_the_first_bad_frame_and_says_why_once(fsrst_server, cli, metric,
                                                              tmp_path):
    # frames 2.. are 16x16: the old CLI sent all 40 and printed 38 error lines
    write_frames(tmp_path / "frames", [32, 32] + [16] * 38)
    Image.fromarray(RNG.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(tmp_path / "r.jpg")
    before = metric(fsrst_server, "fsrst_stream_frames_total", code="INVALID_ARGUMENT")
    result = cli(fsrst_server, "stream", "--identity=cli-stop", f"--ref={tmp_path / 'r.jpg'}",
                 f"--frames_dir={tmp_path / 'frames'}", f"--out_dir={tmp_path / 'out'}",
                 "--window=2")
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("registered")]
    assert errors == [f"fsrst_client: INVALID_ARGUMENT: {tmp_path / 'frames' / 'f02.jpg'}: "
                      "frame: expected 32x32 pixels, got 16x16"], result.stderr
    sent = int(re.search(r"stopped after (\d+) sent", result.stdout).group(1))
    assert 3 <= sent <= 2 + 1 + 2, result.stdout  # the two good, the bad one, its window
    assert "enhanced 2 of 40 frames" in result.stdout
    assert sorted(os.listdir(tmp_path / "out")) == ["f00.jpg", "f01.jpg"]
    refused = metric(fsrst_server, "fsrst_stream_frames_total", code="INVALID_ARGUMENT") - before
    assert refused == sent - 2


def test_identity_the_server_would_refuse_is_refused_in_one_line(fsrst_server, cli, tmp_path):
    Image.fromarray(RNG.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(tmp_path / "r.jpg")
    result = cli(fsrst_server, "register", "--identity=jos\u00e9", f"--ref={tmp_path / 'r.jpg'}")
    assert result.returncode == 1
    assert result.stderr == ("fsrst_client: INVALID_ARGUMENT: identity_id: character 4 "
                             "('\u00e9', U+00E9) is not allowed; expected only [A-Za-z0-9._:@-]\n")
