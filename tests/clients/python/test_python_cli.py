"""The Python CLI (clients/python/fsrst-client) against a real fsrst_server, with
the shipped sample people (examples/people): register, stream, delete, describe,
and what it says about local files and usage."""

import json
import os
import re
import subprocess

import numpy as np
import pytest
from PIL import Image

from server_process import ROOT

from fsrst_client import FsrstClient

LAUNCHER = os.path.join(ROOT, "clients", "python", "fsrst-client")
PERSON = os.path.join(ROOT, "examples", "people", "voxceleb2-00373")
REFS = [os.path.join(PERSON, "references", f"ref_{i}.jpg") for i in range(3)]
FRAMES_DIR = os.path.join(PERSON, "frames")
FRAME_NAMES = sorted(os.listdir(FRAMES_DIR))
LINE = re.compile(r"^(frame_\d{3}\.jpg): (\d+\.\d) ms$")


def cli(server, *args, env=None):
    """Runs the launcher as a user would: no PYTHONPATH."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environment.update(env or {})
    return subprocess.run([LAUNCHER, *args, "--server", f"127.0.0.1:{server.port}"],
                          capture_output=True, text=True, env=environment, timeout=120)


def refs_args():
    return [arg for ref in REFS for arg in ("--ref", ref)]


def test_register_stream_delete_with_the_samples(fsrst_server, tmp_path):
    registered = cli(fsrst_server, "register", "--identity", "sample-a", *refs_args())
    assert registered.returncode == 0, registered.stderr
    assert re.fullmatch(r"registered 3 reference\(s\) of sample-a \(\d+ feature bytes\)\n",
                        registered.stdout)

    streamed = cli(fsrst_server, "stream", "--identity", "sample-a", "--frames_dir", FRAMES_DIR,
                   "--out_dir", str(tmp_path / "out"))
    assert streamed.returncode == 0, streamed.stderr
    lines = streamed.stdout.splitlines()
    # One line per frame, in sorted order, the summary, then each reference's mean weight
    # (fsrst_x4_small reports weights) and their sum.
    assert [LINE.match(line).group(1) for line in lines[:8]] == FRAME_NAMES
    assert re.fullmatch(r"frames: 8, enhanced: 8, errors: 0, latency p50: \d+\.\d ms, "
                        r"p99: \d+\.\d ms, fps: \d+\.\d", lines[8])
    weight_lines = lines[9:12]
    assert [line.split(":")[0] for line in weight_lines] == [f"reference {i}" for i in range(3)]
    means = [float(line.split("mean weight ")[1]) for line in weight_lines]
    assert all(0.0 <= m <= 1.0 for m in means)
    assert re.fullmatch(r"reference share: (\d\.\d{4}) \(1 - share: the model's own\)",
                        lines[12])
    assert len(lines) == 13
    # The server counted the same 8 frames (a fresh registration) and the same means.
    shown = cli(fsrst_server, "identity", "--identity", "sample-a")
    assert shown.returncode == 0, shown.stderr
    fields = dict(line.split(": ", 1) for line in shown.stdout.splitlines())
    assert fields["identity_id"] == "sample-a"
    assert fields["reference_count"] == "3"
    assert fields["frames_served"] == "8"
    assert [float(fields[f"reference {i}"].split("mean weight ")[1]) for i in range(3)] == means
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["registered"])
    assert fields["last_used"] >= fields["registered"]
    assert sorted(os.listdir(tmp_path / "out")) == FRAME_NAMES
    # The answers are the server's faces for those frames with those references
    # (the JPEG written back is compared to the raw answer, so not bit for bit).
    with FsrstClient(f"127.0.0.1:{fsrst_server.port}") as client:
        for name in (FRAME_NAMES[0], FRAME_NAMES[-1]):
            expected = client.enhance("", os.path.join(FRAMES_DIR, name), references=REFS)
            written = np.asarray(Image.open(tmp_path / "out" / name), np.float64)
            assert written.shape == (128, 128, 3)
            assert np.abs(written - expected).mean() < 3.0
            unrelated = client.enhance("", os.path.join(FRAMES_DIR, FRAME_NAMES[3]))
            assert np.abs(written - unrelated).mean() > 3.0  # the check can tell faces apart

    deleted = cli(fsrst_server, "delete", "--identity", "sample-a")
    assert (deleted.returncode, deleted.stdout) == (0, "deleted the references of sample-a\n")
    again = cli(fsrst_server, "delete", "--identity", "sample-a")
    assert again.returncode == 1 and again.stderr.startswith("fsrst_client: NOT_FOUND: ")


def test_identity_of_an_unknown_identity_is_not_found(fsrst_server):
    result = cli(fsrst_server, "identity", "--identity", "nobody-registered")
    assert result.returncode == 1
    assert result.stderr.startswith("fsrst_client: NOT_FOUND: ")
    assert "call RegisterReferences again" in result.stderr
    usage = cli(fsrst_server, "identity")
    assert usage.returncode == 2 and "identity needs --identity" in usage.stderr


def test_stream_of_an_unknown_identity_stops_at_the_first_not_found(fsrst_server):
    result = cli(fsrst_server, "stream", "--identity", "nobody-registered", "--frames_dir",
                 FRAMES_DIR, "--window", "1")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len([line for line in lines if "NOT_FOUND" in line]) == 1
    assert lines[0].startswith("frame_000.jpg: NOT_FOUND: ")
    assert lines[1] == ("stopped: nobody-registered is not registered; register it first "
                        "(register --identity nobody-registered --ref ...), or pass --ref")
    assert lines[2] == "frames: 8, enhanced: 0, errors: 1, not sent or not answered: 7"


def test_stream_with_refs_registers_and_counts_a_bad_frame_without_stopping(fsrst_server,
                                                                            tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in FRAME_NAMES[:3]:
        Image.open(os.path.join(FRAMES_DIR, name)).save(frames / name)
    Image.new("RGB", (64, 64)).save(frames / "frame_001b.jpg")  # not 32x32
    result = cli(fsrst_server, "stream", "--identity", "sample-b", *refs_args(), "--frames_dir",
                 str(frames))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("registered 3 reference(s) of sample-b")
    assert lines[3].startswith("frame_001b.jpg: INVALID_ARGUMENT: ") and "32x32" in lines[3]
    assert [LINE.match(line).group(1) for line in (lines[1], lines[2], lines[4])] == [
        "frame_000.jpg", "frame_001.jpg", "frame_002.jpg"]
    assert lines[5].startswith("frames: 4, enhanced: 3, errors: 1, latency p50: ")


def test_a_missing_local_file_is_not_reported_as_a_server_status(fsrst_server, tmp_path):
    missing = str(tmp_path / "missing.jpg")
    result = cli(fsrst_server, "register", "--identity", "sample-c", "--ref", missing)
    assert result.returncode == 1
    assert result.stderr == (f"fsrst_client: error: cannot read {missing}: "
                             "No such file or directory\n")
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    result = cli(fsrst_server, "enhance", "--frame", str(not_image), "--out",
                 str(tmp_path / "o.png"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"fsrst_client: error: cannot read {not_image}: ")
    result = cli(fsrst_server, "stream", "--identity", "x", "--frames_dir", str(tmp_path / "no"))
    assert result.returncode == 1
    assert result.stderr == (f"fsrst_client: error: cannot list {tmp_path / 'no'}: "
                             "No such file or directory\n")


@pytest.mark.parametrize("args, message", [
    (["register", "--ref", "a.jpg"], "register needs --identity"),
    (["register", "--identity", "a"], "register needs at least one --ref"),
    (["delete"], "delete needs --identity"),
    (["stream", "--identity", "a"], "stream needs --frames_dir"),
    (["stream", "--identity", "a", "--frames_dir", ".", "--window", "0"],
     "--window: expected at least 1, got 0"),
])
def test_usage_errors_name_what_is_missing(fsrst_server, args, message):
    result = cli(fsrst_server, *args)
    assert result.returncode == 2
    assert f"error: {message}" in result.stderr


def test_describe_lists_the_services_methods(fsrst_server):
    result = cli(fsrst_server, "describe")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "service fsrst.v1.FaceSuperResolution" in out
    for rpc in ("rpc RegisterReferences(RegisterReferencesRequest) returns "
                "(RegisterReferencesResponse)",
                "rpc Enhance(EnhanceRequest) returns (EnhanceResponse)",
                "rpc EnhanceStream(stream EnhanceRequest) returns (stream EnhanceResponse)",
                "rpc DeleteReferences(DeleteReferencesRequest) returns "
                "(DeleteReferencesResponse)",
                "rpc GetServerInfo(GetServerInfoRequest) returns (GetServerInfoResponse)",
                "rpc Check(HealthCheckRequest) returns (HealthCheckResponse)"):
        assert rpc in out
    assert "request: identity_id string, references repeated Image" in out


API_KEY = "cli-test-key-0123456789abcdef"


def test_unauthenticated_says_how_to_send_a_key(start_server, tmp_path):
    keys = tmp_path / "api_keys.txt"
    keys.write_text(f"{API_KEY} tenant-cli\n")
    server = start_server(f"--api_keys_file={keys}")
    without = cli(server, "register", "--identity", "k", *refs_args(),
                  env={"FSRST_API_KEY": ""})
    assert without.returncode == 1
    lines = without.stderr.splitlines()
    assert lines[0].startswith("fsrst_client: UNAUTHENTICATED: ")
    assert "`authorization: Bearer <key>`" in lines[0]  # the server's own message
    assert lines[1] == ("fsrst_client: this server requires an API key: pass --api_key KEY, or "
                        "set FSRST_API_KEY=KEY (keeps it out of ps); other clients send the "
                        "metadata `authorization: Bearer KEY`")
    wrong = cli(server, "register", "--identity", "k", *refs_args(),
                env={"FSRST_API_KEY": "not-the-key-0123456789"})
    assert wrong.returncode == 1
    assert wrong.stderr.splitlines()[1] == (
        "fsrst_client: the server refused the API key sent (from --api_key or $FSRST_API_KEY); "
        "check it with whoever runs the server")
    right = cli(server, "register", "--identity", "k", *refs_args(),
                env={"FSRST_API_KEY": API_KEY})
    assert (right.returncode, right.stderr) == (0, "")
    flag = cli(server, "delete", "--identity", "k", "--api_key", API_KEY,
               env={"FSRST_API_KEY": ""})
    assert (flag.returncode, flag.stdout) == (0, "deleted the references of k\n")


def test_call_makes_a_unary_call_from_json_as_grpcurl_d_would(fsrst_server):
    info = cli(fsrst_server, "call", "GetServerInfo")
    assert info.returncode == 0, info.stderr
    answer = json.loads(info.stdout)
    assert (answer["model_name"], answer["lr_size"], answer["scale"]) == ("fsrst_x4_small", 32, 4)
    health = cli(fsrst_server, "call", "grpc.health.v1.Health/Check", "--data", '{"service": ""}')
    assert (health.returncode, json.loads(health.stdout)) == (0, {"status": "SERVING"})
    registered = cli(fsrst_server, "register", "--identity", "called", *refs_args())
    assert registered.returncode == 0
    deleted = cli(fsrst_server, "call", "DeleteReferences", "--data", '{"identity_id": "called"}')
    assert (deleted.returncode, json.loads(deleted.stdout)) == (0, {})
    again = cli(fsrst_server, "call", "DeleteReferences", "--data", '{"identity_id": "called"}')
    assert again.returncode == 1 and again.stderr.startswith("fsrst_client: NOT_FOUND: ")


@pytest.mark.parametrize("args, code, message", [
    (["call"], 2, "error: call needs a method, e.g. call GetServerInfo (see describe)"),
    (["call", "Nope"], 1, "fsrst_client: error: call: expected one of RegisterReferences, "
                          "Enhance, EnhanceStream, DeleteReferences, GetIdentity, GetServerInfo"),
    (["call", "EnhanceStream"], 1, "fsrst_client: error: call: EnhanceStream streams; use the "
                                   "stream command"),
    (["call", "DeleteReferences", "--data", '{"identity": "x"}'], 1,
     "fsrst_client: error: --data: expected a JSON DeleteReferencesRequest: "),
    (["info", "GetServerInfo"], 2, "error: unexpected argument 'GetServerInfo' after info"),
])
def test_call_errors_name_what_was_expected(fsrst_server, args, code, message):
    result = cli(fsrst_server, *args)
    assert result.returncode == code
    assert message in result.stderr


def test_side_by_side_with_the_samples_truth(fsrst_server, tmp_path):
    frame = os.path.join(FRAMES_DIR, "frame_004.jpg")
    truth = os.path.join(PERSON, "truth", "frame_004.jpg")
    result = cli(fsrst_server, "enhance", "--frame", frame, *refs_args(), "--out",
                 str(tmp_path / "face.png"), "--side_by_side", str(tmp_path / "sbs.png"),
                 "--truth", truth)
    assert result.returncode == 0, result.stderr
    sbs = np.asarray(Image.open(tmp_path / "sbs.png"))
    assert sbs.shape == (16 + 128, 128 * 7, 3)  # LR, bicubic, enhanced, truth, 3 references
    assert np.array_equal(sbs[16:, 256:384], np.asarray(Image.open(tmp_path / "face.png")))
    assert np.array_equal(sbs[16:, 384:512], np.asarray(Image.open(truth).convert("RGB")))
    assert np.array_equal(sbs[16:, 512:640], np.asarray(Image.open(REFS[0]).convert("RGB")))
    lonely = cli(fsrst_server, "enhance", "--frame", frame, "--out", str(tmp_path / "f.png"),
                 "--truth", truth)
    assert lonely.returncode == 2 and "error: --truth goes with --side_by_side" in lonely.stderr


def test_the_server_address_comes_from_fsrst_server_when_not_given(fsrst_server):
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = subprocess.run([LAUNCHER, "health"], capture_output=True, text=True, timeout=60,
                           env={**environment, "FSRST_SERVER": f"127.0.0.1:{fsrst_server.port}"})
    assert found.returncode == 0 and found.stdout.strip() == "SERVING", found.stderr
    # --server wins over the environment.
    flag = subprocess.run([LAUNCHER, "health", "--server", f"127.0.0.1:{fsrst_server.port}"],
                          capture_output=True, text=True, timeout=60,
                          env={**environment, "FSRST_SERVER": "127.0.0.1:1"})
    assert flag.returncode == 0, flag.stderr
