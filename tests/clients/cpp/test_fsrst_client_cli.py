"""The C++ CLI (build/clients/cpp/fsrst_client) against a real fsrst_server: a stream
stops at the first error that is not a server going away, and says why once; PNG,
delete, success lines on stdout, and local file errors that do not look like a
server's status."""

import os
import re
import subprocess

import numpy as np
import pytest
from PIL import Image

from server_process import BUILD, ROOT, read_metric

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


def test_stream_stops_at_the_first_bad_frame_and_says_why_once(fsrst_server, cli,
                                                              tmp_path):
    # frames 2.. are 16x16: the old CLI sent all 40 and printed 38 error lines
    write_frames(tmp_path / "frames", [32, 32] + [16] * 38)
    Image.fromarray(RNG.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(tmp_path / "r.jpg")
    before = read_metric(fsrst_server, "fsrst_stream_frames_total", code="INVALID_ARGUMENT")
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
    refused = read_metric(fsrst_server, "fsrst_stream_frames_total",
                          code="INVALID_ARGUMENT") - before
    assert refused == sent - 2


def test_identity_the_server_would_refuse_is_refused_in_one_line(fsrst_server, cli, tmp_path):
    Image.fromarray(RNG.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(tmp_path / "r.jpg")
    result = cli(fsrst_server, "register", "--identity=jos\u00e9", f"--ref={tmp_path / 'r.jpg'}")
    assert result.returncode == 1
    assert result.stderr == ("fsrst_client: INVALID_ARGUMENT: identity_id: character 4 "
                             "('\u00e9', U+00E9) is not allowed; expected only [A-Za-z0-9._:@-]\n")


# --- the sample people, PNG, delete, and what is whose error --------------------------------

PERSON = os.path.join(ROOT, "examples", "people", "voxceleb2-620900105")
SAMPLE_REFS = [os.path.join(PERSON, "references", f"ref_{i}.jpg") for i in range(3)]
SAMPLE_FRAMES = os.path.join(PERSON, "frames")


def test_register_enhance_delete_print_their_success_on_stdout(fsrst_server, cli, tmp_path):
    registered = cli(fsrst_server, "register", "--identity=cpp-a",
                     "--ref=" + ",".join(SAMPLE_REFS))
    assert (registered.returncode, registered.stderr) == (0, "")
    assert re.fullmatch(r"registered 3 reference\(s\) of cpp-a \(\d+ feature bytes\)\n",
                        registered.stdout)
    out = tmp_path / "face.jpg"
    enhanced = cli(fsrst_server, "enhance", "--identity=cpp-a",
                   f"--frame={os.path.join(SAMPLE_FRAMES, 'frame_000.jpg')}", f"--out={out}")
    assert (enhanced.returncode, enhanced.stderr) == (0, "")
    assert enhanced.stdout == f"wrote {out} (128x128)\n"
    deleted = cli(fsrst_server, "delete", "--identity=cpp-a")
    assert (deleted.returncode, deleted.stdout, deleted.stderr) == (
        0, "deleted the references of cpp-a\n", "")
    # deleted on the server: a new client (a new process) gets NOT_FOUND for it
    again = cli(fsrst_server, "enhance", "--identity=cpp-a",
                f"--frame={os.path.join(SAMPLE_FRAMES, 'frame_000.jpg')}", f"--out={out}")
    assert again.returncode == 1
    assert again.stderr.startswith("fsrst_client: NOT_FOUND: ")
    gone = cli(fsrst_server, "delete", "--identity=cpp-a")
    assert gone.returncode == 1 and gone.stderr.startswith("fsrst_client: NOT_FOUND: ")
    usage = cli(fsrst_server, "delete")
    assert usage.returncode == 2 and "delete needs --identity" in usage.stderr


def test_png_frames_and_references_give_the_servers_answer_exactly(fsrst_server, cli, tmp_path):
    from fsrst_client import FsrstClient  # tests/clients/conftest.py puts it on sys.path
    refs = [np.asarray(Image.open(p).convert("RGB")) for p in SAMPLE_REFS]
    frame = np.asarray(Image.open(os.path.join(SAMPLE_FRAMES, "frame_002.jpg")).convert("RGB"))
    png_refs = []
    for i, ref in enumerate(refs):
        Image.fromarray(ref).save(tmp_path / f"ref_{i}.png")
        png_refs.append(str(tmp_path / f"ref_{i}.png"))
    # an RGBA frame whose alpha is all opaque: the same pixels once composited
    Image.fromarray(frame).convert("RGBA").save(tmp_path / "frame.png")
    result = cli(fsrst_server, "enhance", "--identity=cpp-png", "--ref=" + ",".join(png_refs),
                 f"--frame={tmp_path / 'frame.png'}", f"--out={tmp_path / 'face.png'}")
    assert result.returncode == 0, result.stderr
    with FsrstClient(f"127.0.0.1:{fsrst_server.port}") as client:
        expected = client.enhance("", frame, references=refs)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "face.png")), expected)


def test_stream_sends_png_frames_and_writes_png_answers(fsrst_server, cli, tmp_path):
    (tmp_path / "frames").mkdir()
    for name in sorted(os.listdir(SAMPLE_FRAMES))[:4]:
        Image.open(os.path.join(SAMPLE_FRAMES, name)).save(
            tmp_path / "frames" / name.replace(".jpg", ".png"))
    result = cli(fsrst_server, "stream", "--identity=cpp-stream", "--ref=" + ",".join(SAMPLE_REFS),
                 f"--frames_dir={tmp_path / 'frames'}", f"--out_dir={tmp_path / 'out'}")
    assert (result.returncode, result.stderr) == (0, "")
    assert f"enhanced 4 of 4 frames into {tmp_path / 'out'}" in result.stdout
    names = sorted(os.listdir(tmp_path / "out"))
    assert names == [f"frame_{i:03d}.png" for i in range(4)]
    assert Image.open(tmp_path / "out" / names[0]).size == (128, 128)
    # Each reference's mean weight over the 4 frames (fsrst_x4_small reports weights), then
    # their sum; the server's GetIdentity (a fresh registration: the same 4 frames) agrees.
    lines = result.stdout.splitlines()
    weight_lines = [line for line in lines if re.match(r"reference \d+: ", line)]
    assert [line.split(":")[0] for line in weight_lines] == [f"reference {i}" for i in range(3)]
    means = [float(line.split("mean weight ")[1]) for line in weight_lines]
    assert all(0.0 <= m <= 1.0 for m in means)
    assert re.fullmatch(r"reference share: \d\.\d{4} \(1 - share: the model's own\)", lines[-1])
    shown = cli(fsrst_server, "identity", "--identity=cpp-stream")
    assert (shown.returncode, shown.stderr) == (0, "")
    fields = dict(line.split(": ", 1) for line in shown.stdout.splitlines())
    assert (fields["identity_id"], fields["reference_count"], fields["frames_served"]) == (
        "cpp-stream", "3", "4")
    assert [float(fields[f"reference {i}"].split("mean weight ")[1]) for i in range(3)] == means
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["registered"])


def test_identity_of_an_unknown_identity_is_not_found(fsrst_server, cli):
    result = cli(fsrst_server, "identity", "--identity=cpp-nobody-here")
    assert result.returncode == 1
    assert result.stderr.startswith("fsrst_client: NOT_FOUND: ")
    usage = cli(fsrst_server, "identity")
    assert usage.returncode == 2 and "identity needs --identity" in usage.stderr


def test_stream_of_an_unknown_identity_stops_after_the_first_not_found(fsrst_server, cli,
                                                                       tmp_path):
    before = read_metric(fsrst_server, "fsrst_stream_frames_total", code="NOT_FOUND")
    result = cli(fsrst_server, "stream", "--identity=cpp-nobody", f"--frames_dir={SAMPLE_FRAMES}",
                 f"--out_dir={tmp_path / 'out'}", "--window=1")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(f"fsrst_client: NOT_FOUND: {SAMPLE_FRAMES}/frame_000.jpg: ")
    assert lines[1] == ("fsrst_client: cpp-nobody is not registered: register it first "
                        "(fsrst_client register --identity=cpp-nobody --ref ...), or give --ref "
                        "to stream")
    assert "enhanced 0 of 8 frames" in result.stdout and "stopped after 1 sent" in result.stdout
    assert read_metric(fsrst_server, "fsrst_stream_frames_total", code="NOT_FOUND") == before + 1


def test_a_local_file_error_does_not_look_like_a_server_status(fsrst_server, cli, tmp_path):
    missing = tmp_path / "x.jpg"
    result = cli(fsrst_server, "register", "--identity=cpp-b", f"--ref={missing}")
    assert result.returncode == 1
    assert result.stderr == f"fsrst_client: error: cannot read {missing}: No such file or directory\n"
    result = cli(fsrst_server, "enhance", f"--frame={missing}", f"--out={tmp_path / 'o.jpg'}")
    assert result.stderr == f"fsrst_client: error: cannot read {missing}: No such file or directory\n"
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"not a png")
    result = cli(fsrst_server, "enhance", f"--frame={bad_png}", f"--out={tmp_path / 'o.jpg'}")
    assert result.returncode == 1
    assert result.stderr.startswith(f"fsrst_client: error: {bad_png}: not a PNG libpng can read")
    result = cli(fsrst_server, "stream", "--identity=cpp-b", f"--frames_dir={tmp_path / 'none'}",
                 f"--out_dir={tmp_path / 'out'}")
    assert result.returncode == 1
    assert result.stderr.startswith(f"fsrst_client: error: cannot list {tmp_path / 'none'}: ")
    unwritable = tmp_path / "no_dir" / "o.jpg"
    result = cli(fsrst_server, "enhance", f"--frame={os.path.join(SAMPLE_FRAMES, 'frame_000.jpg')}",
                 f"--out={unwritable}")
    assert result.returncode == 1
    assert result.stderr == (f"fsrst_client: error: cannot write {unwritable}: "
                             "No such file or directory\n")



def test_unauthenticated_says_how_to_send_a_key(start_server, tmp_path):
    key = "cpp-cli-test-key-0123456789"
    keys = tmp_path / "api_keys.txt"
    keys.write_text(f"{key} tenant-cli\n")
    server = start_server(f"--api_keys_file={keys}")

    def run(*args, env_key=None):
        env = {k: v for k, v in os.environ.items() if k != "FSRST_API_KEY"}
        if env_key is not None:
            env["FSRST_API_KEY"] = env_key
        return subprocess.run([CLIENT_BIN, f"--server=127.0.0.1:{server.port}", *args],
                              capture_output=True, text=True, timeout=120, env=env)

    register = ["register", "--identity=k", "--ref=" + ",".join(SAMPLE_REFS)]
    without = run(*register)
    assert without.returncode == 1
    lines = without.stderr.splitlines()
    assert lines[0].startswith("fsrst_client: UNAUTHENTICATED: ")
    assert "`authorization: Bearer <key>`" in lines[0]  # the server's own message
    assert lines[1] == ("fsrst_client: this server requires an API key: pass --api_key=KEY, or "
                        "set FSRST_API_KEY=KEY (keeps it out of ps); other clients send the "
                        "metadata `authorization: Bearer KEY`")
    wrong = run(*register, env_key="not-the-key-0123456789")
    assert wrong.returncode == 1
    assert wrong.stderr.splitlines()[1] == (
        "fsrst_client: the server refused the API key sent (from --api_key or $FSRST_API_KEY); "
        "check it with whoever runs the server")
    right = run(*register, env_key=key)
    assert (right.returncode, right.stderr) == (0, "")
    flag = run("delete", "--identity=k", f"--api_key={key}")
    assert (flag.returncode, flag.stdout) == (0, "deleted the references of k\n")


def test_the_server_address_comes_from_fsrst_server_when_not_given(fsrst_server, cli):
    address = f"127.0.0.1:{fsrst_server.port}"
    found = subprocess.run([CLIENT_BIN, "health"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "FSRST_SERVER": address})
    assert found.returncode == 0, found.stdout + found.stderr
    # --server wins over the environment.
    flag = subprocess.run([CLIENT_BIN, f"--server={address}", "health"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "FSRST_SERVER": "127.0.0.1:1"})
    assert flag.returncode == 0, flag.stdout + flag.stderr
