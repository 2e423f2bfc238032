"""fsrst_server's security flags end to end: TLS and mTLS with a throwaway CA
made here by openssl, API keys and tenants, the size limits under TLS, no key
or image bytes in the log, and deleted or expired identities freeing their
features (as /metrics shows)."""

import base64
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest

from server_process import (BUILD, ROOT, ServerProcess, read_metric, rgb8, small_model,
                            wait_for)
import fsrst_pb2
import fsrst_pb2_grpc
import health_pb2
import health_pb2_grpc

sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
from fsrst_client import FsrstClient, FsrstError  # noqa: E402

KEY_A = "tenant-a-key-5f1c9a0e7b3d42c8a1f0"
KEY_B = "tenant-b-key-0d8e6b2a94c71f35e9b4"
UNKNOWN_KEY = "not-a-key-anyone-was-given-7777"
CLIENT_BIN = os.path.join(BUILD, "clients", "cpp", "fsrst_client")
RNG = np.random.default_rng(11)


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
            "-subj", f"/CN={name}", cwd=folder)


def make_cert(folder, name, ca, extensions):
    """A certificate signed by `ca`, with the X.509v3 `extensions` (openssl syntax)."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
    with open(os.path.join(folder, f"{name}.ext"), "w") as f:
        f.write(extensions)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
            cwd=folder)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """ca (trusted), server cert for 127.0.0.1/localhost, client cert by ca, and a
    client cert by another CA (rogue). Returns {name: path}."""
    folder = str(tmp_path_factory.mktemp("pki"))
    make_ca(folder, "ca")
    make_ca(folder, "rogue_ca")
    make_cert(folder, "server", "ca",
              "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    make_cert(folder, "client", "ca", "extendedKeyUsage=clientAuth\n")
    make_cert(folder, "rogue_client", "rogue_ca", "extendedKeyUsage=clientAuth\n")
    paths = {name: os.path.join(folder, name) for name in
             ("ca.pem", "rogue_ca.pem", "server.pem", "server.key", "client.pem", "client.key",
              "rogue_client.pem", "rogue_client.key")}
    keys = os.path.join(folder, "api_keys.txt")
    with open(keys, "w") as f:
        f.write(f"# test tenants\n{KEY_A} tenant-a\n{KEY_B}\ttenant-b\n")
    paths["api_keys"] = keys
    return paths


def read(path):
    with open(path, "rb") as f:
        return f.read()


def tls_channel(port, pki, client_cert=None, ca="ca.pem"):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(pki[ca]),
        private_key=read(pki[client_cert + ".key"]) if client_cert else None,
        certificate_chain=read(pki[client_cert + ".pem"]) if client_cert else None)
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials,
                               options=[("grpc.max_send_message_length", 64 << 20)])


def auth(key):
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture(scope="module")
def tls_server(pki):
    """TLS (no client certificates) and API keys, 1 MiB messages, 128x128-pixel images."""
    server = ServerProcess(small_model(), "--model_threads=1", "--max_batch_size=2",
                           f"--tls_cert={pki['server.pem']}", f"--tls_key={pki['server.key']}",
                           f"--api_keys_file={pki['api_keys']}", "--max_message_bytes=1048576",
                           "--max_image_pixels=16384")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server(pki):
    server = ServerProcess(small_model(), "--model_threads=1", "--max_batch_size=2",
                           f"--tls_cert={pki['server.pem']}", f"--tls_key={pki['server.key']}",
                           f"--tls_client_ca={pki['ca.pem']}")
    yield server
    server.stop()


def info(channel, metadata=None):
    return fsrst_pb2_grpc.FaceSuperResolutionStub(channel).GetServerInfo(
        fsrst_pb2.GetServerInfoRequest(), timeout=10, metadata=metadata)


# --- TLS ---------------------------------------------------------------------------------------

def test_plaintext_client_cannot_talk_to_a_tls_server(tls_server):
    with grpc.insecure_channel(f"127.0.0.1:{tls_server.port}") as channel:
        with pytest.raises(grpc.RpcError) as error:
            info(channel, auth(KEY_A))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_client_with_a_key_is_served(tls_server, pki):
    with tls_channel(tls_server.port, pki) as channel:
        assert info(channel, auth(KEY_A)).model_name == "fsrst_x4_small"


def test_tls_client_that_does_not_trust_the_server_fails(tls_server, pki):
    with tls_channel(tls_server.port, pki, ca="rogue_ca.pem") as channel:
        with pytest.raises(grpc.RpcError) as error:
            info(channel, auth(KEY_A))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_health_needs_no_key(tls_server, pki):
    with tls_channel(tls_server.port, pki) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_mtls_refuses_a_client_without_a_certificate(mtls_server, pki):
    with tls_channel(mtls_server.port, pki) as channel:
        with pytest.raises(grpc.RpcError) as error:
            info(channel)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_a_certificate_of_another_ca(mtls_server, pki):
    with tls_channel(mtls_server.port, pki, client_cert="rogue_client") as channel:
        with pytest.raises(grpc.RpcError) as error:
            info(channel)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_serves_a_client_with_its_certificate(mtls_server, pki):
    with tls_channel(mtls_server.port, pki, client_cert="client") as channel:
        assert info(channel).model_name == "fsrst_x4_small"
    # The Python client library does the same with its tls_* options.
    with FsrstClient(f"127.0.0.1:{mtls_server.port}", tls_ca=pki["ca.pem"],
                     tls_cert=pki["client.pem"], tls_key=pki["client.key"]) as client:
        face = client.enhance("", RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert face.shape == (128, 128, 3)


# --- API keys ----------------------------------------------------------------------------------

def test_missing_and_unknown_keys_are_unauthenticated(tls_server, pki):
    with tls_channel(tls_server.port, pki) as channel:
        for metadata in (None, auth(UNKNOWN_KEY), (("authorization", KEY_A),)):
            with pytest.raises(grpc.RpcError) as error:
                info(channel, metadata)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
            assert KEY_A not in error.value.details()


def test_every_rpc_is_unauthenticated_before_its_request_is_looked_at(tls_server, pki):
    # Requests that are wrong in every other way too (bad id, bad images, unknown identity):
    # without a valid key the answer is UNAUTHENTICATED, never what the request deserves.
    # Every RPC that takes an identity id is sent an invalid one, so that checking the id
    # before the key fails the test, and an unknown one, so that looking it up first does.
    bad_image = fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_JPEG, data=b"not a jpeg")
    oversize = fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_RGB8, data=b"x" * 900_000,
                               width=32, height=32)

    def calls_with(identity_id):
        return {
            "RegisterReferences": lambda stub, md: stub.RegisterReferences(
                fsrst_pb2.RegisterReferencesRequest(identity_id=identity_id,
                                                    references=[bad_image] * 9),
                timeout=10, metadata=md),
            "Enhance": lambda stub, md: stub.Enhance(
                fsrst_pb2.EnhanceRequest(identity_id=identity_id, frame=oversize),
                timeout=10, metadata=md),
            "EnhanceStream": lambda stub, md: list(stub.EnhanceStream(
                iter([fsrst_pb2.EnhanceRequest(identity_id=identity_id, frame=bad_image)]),
                timeout=10, metadata=md)),
            "DeleteReferences": lambda stub, md: stub.DeleteReferences(
                fsrst_pb2.DeleteReferencesRequest(identity_id=identity_id), timeout=10,
                metadata=md),
            "GetServerInfo": lambda stub, md: stub.GetServerInfo(
                fsrst_pb2.GetServerInfoRequest(), timeout=10, metadata=md),
            "GetIdentity": lambda stub, md: stub.GetIdentity(
                fsrst_pb2.GetIdentityRequest(identity_id=identity_id), timeout=10,
                metadata=md),
        }
    bad_id, unknown_id = calls_with("bad id!"), calls_with("never-registered")
    with tls_channel(tls_server.port, pki) as channel:
        stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
        for kind, calls in (("bad id", bad_id), ("unknown id", unknown_id)):
            for name, call in calls.items():
                for metadata in (None, auth(UNKNOWN_KEY)):
                    with pytest.raises(grpc.RpcError) as error:
                        call(stub, metadata)
                    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED, (
                        kind, name, metadata, error.value.details())
        # The same requests with a valid key get what they deserve (so the test can tell).
        for name in ("RegisterReferences", "Enhance", "DeleteReferences", "GetIdentity"):
            with pytest.raises(grpc.RpcError) as error:
                bad_id[name](stub, auth(KEY_A))
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        for name in ("DeleteReferences", "GetIdentity"):
            with pytest.raises(grpc.RpcError) as error:
                unknown_id[name](stub, auth(KEY_A))
            assert error.value.code() == grpc.StatusCode.NOT_FOUND, name


def test_python_client_tenants_cannot_use_each_others_identities(tls_server, pki):
    target = f"127.0.0.1:{tls_server.port}"
    refs = [RNG.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2)]
    frame = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    with FsrstClient(target, api_key=KEY_A, tls_ca=pki["ca.pem"]) as a, \
            FsrstClient(target, api_key=KEY_B, tls_ca=pki["ca.pem"]) as b:
        a.register_references("shared-name", refs)
        assert a.enhance("shared-name", frame).shape == (128, 128, 3)
        with pytest.raises(FsrstError) as error:
            b.enhance("shared-name", frame)  # b never registered it: no re-registration
        assert error.value.code == grpc.StatusCode.NOT_FOUND
        # Streams carry the key too.
        faces = list(a.enhance_stream("shared-name", [frame, frame]))
        assert [f.shape for f in faces] == [(128, 128, 3)] * 2
        with pytest.raises(FsrstError) as error:
            list(b.enhance_stream("shared-name", [frame]))
        assert error.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(FsrstError) as deleted:
            b.delete_references("shared-name")
        assert deleted.value.code == grpc.StatusCode.NOT_FOUND
        assert a.enhance("shared-name", frame).shape == (128, 128, 3)
        a.delete_references("shared-name")


def test_cpp_cli_takes_tls_ca_and_api_key(tls_server, pki):
    if not os.path.exists(CLIENT_BIN):
        pytest.fail(f"{CLIENT_BIN} is not built")
    base = [CLIENT_BIN, f"--server=127.0.0.1:{tls_server.port}", f"--tls_ca={pki['ca.pem']}"]
    ok = subprocess.run(base + [f"--api_key={KEY_B}", "info"], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "fsrst_x4_small" in ok.stdout
    from_env = subprocess.run(base + ["info"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "FSRST_API_KEY": KEY_A})
    assert from_env.returncode == 0, from_env.stderr
    refused = subprocess.run(base + ["info"], capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k != "FSRST_API_KEY"})
    assert refused.returncode == 1
    assert "UNAUTHENTICATED" in refused.stderr


# --- Limits under TLS and keys -----------------------------------------------------------------

def test_limits_hold_under_tls(tls_server, pki):
    with tls_channel(tls_server.port, pki) as channel:
        stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
        oversize = fsrst_pb2.EnhanceRequest(frame=fsrst_pb2.Image(
            encoding=fsrst_pb2.ENCODING_RGB8, data=b"x" * (2 << 20), width=32, height=32))
        with pytest.raises(grpc.RpcError) as error:
            stub.Enhance(oversize, timeout=30, metadata=auth(KEY_A))
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        small = rgb8(np.zeros((128, 128, 3), np.uint8))
        with pytest.raises(grpc.RpcError) as error:
            stub.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
                identity_id="many", references=[small] * 9), timeout=30, metadata=auth(KEY_A))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "references: expected 1 to 8 images, got 9" in error.value.details()

        with pytest.raises(grpc.RpcError) as error:
            stub.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
                identity_id="large", references=[rgb8(np.zeros((130, 130, 3), np.uint8))]),
                timeout=30, metadata=auth(KEY_A))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "over the limit of 16384 pixels" in error.value.details()


# --- Nothing secret in the log -----------------------------------------------------------------

# Identity ids nobody else uses, so a grep for "SENTINEL" finds any of them in any message.
SENTINEL_ID = "SENTINEL-person-7f3a"
UNKNOWN_SENTINEL_ID = "SENTINEL-never-registered"
BAD_SENTINEL_ID = "SENTINEL bad id"  # a space: INVALID_ARGUMENT quoting the id's character

def test_keys_and_image_bytes_never_reach_the_log(pki):
    server = ServerProcess(small_model(), "--model_threads=1", "--max_batch_size=2",
                           f"--tls_cert={pki['server.pem']}", f"--tls_key={pki['server.key']}",
                           f"--api_keys_file={pki['api_keys']}")
    # Text-like bytes, so that a leak would show in the log in any form.
    ref = np.frombuffer((b"REFERENCE-PIXELS-" * 3000)[:128 * 128 * 3], np.uint8).reshape(
        128, 128, 3)
    frame = np.frombuffer((b"FRAME-PIXELS-" * 300)[:32 * 32 * 3], np.uint8).reshape(32, 32, 3)
    try:
        with tls_channel(server.port, pki) as channel:
            stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
            stub.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
                identity_id=SENTINEL_ID, references=[rgb8(ref)]), timeout=30,
                metadata=auth(KEY_A))
            stub.Enhance(fsrst_pb2.EnhanceRequest(identity_id=SENTINEL_ID, frame=rgb8(frame)),
                         timeout=30, metadata=auth(KEY_A))
            # The paths whose answers carry the id: NOT_FOUND (another tenant, an unknown id),
            # INVALID_ARGUMENT (a bad reference, a bad id); the caller sees it, the log must not.
            refusals = [
                (stub.Enhance, fsrst_pb2.EnhanceRequest(identity_id=SENTINEL_ID,
                                                        frame=rgb8(frame)), KEY_B),
                (stub.Enhance, fsrst_pb2.EnhanceRequest(identity_id=UNKNOWN_SENTINEL_ID,
                                                        frame=rgb8(frame)), KEY_A),
                (stub.DeleteReferences, fsrst_pb2.DeleteReferencesRequest(
                    identity_id=UNKNOWN_SENTINEL_ID), KEY_A),
                (stub.RegisterReferences, fsrst_pb2.RegisterReferencesRequest(
                    identity_id=SENTINEL_ID, references=[fsrst_pb2.Image(
                        encoding=fsrst_pb2.ENCODING_JPEG, data=b"not a jpeg")]), KEY_A),
                (stub.Enhance, fsrst_pb2.EnhanceRequest(identity_id=BAD_SENTINEL_ID,
                                                        frame=rgb8(frame)), KEY_A),
            ]
            codes = []
            for rpc, request, key in refusals:
                with pytest.raises(grpc.RpcError) as error:
                    rpc(request, timeout=30, metadata=auth(key))
                codes.append(error.value.code())
            assert codes == [grpc.StatusCode.NOT_FOUND] * 3 + [
                grpc.StatusCode.INVALID_ARGUMENT] * 2
            bad = fsrst_pb2.EnhanceRequest(frame=fsrst_pb2.Image(
                encoding=fsrst_pb2.ENCODING_RGB8, data=ref.tobytes()[:1000], width=32, height=32))
            for metadata in (auth(KEY_B), auth(UNKNOWN_KEY)):
                with pytest.raises(grpc.RpcError):
                    stub.Enhance(bad, timeout=30, metadata=metadata)
    finally:
        assert server.stop() == 0
    log = server.output()
    assert "SERVING" in log and "API keys required" in log  # the log is the server's
    for secret in (KEY_A, KEY_B, UNKNOWN_KEY, "REFERENCE-PIXELS", "FRAME-PIXELS", "SENTINEL",
                   base64.b64encode(ref.tobytes()[:48]).decode(), ref.tobytes()[:24].hex()):
        assert secret not in log, secret


# --- Deleting and expiring free the features ---------------------------------------------------

def test_delete_references_frees_the_features_on_metrics(pki):
    server = ServerProcess(small_model(), "--model_threads=1", "--max_batch_size=2",
                           f"--api_keys_file={pki['api_keys']}")
    try:
        assert read_metric(server, "fsrst_reference_cache_entries", required=True) == 0
        assert read_metric(server, "fsrst_reference_cache_bytes", required=True) == 0
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
            refs = [rgb8(RNG.integers(0, 256, (128, 128, 3), dtype=np.uint8)) for _ in range(3)]
            answers = [stub.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
                identity_id="temp", references=refs), timeout=30, metadata=auth(key))
                for key in (KEY_A, KEY_B)]  # the same id in two tenants: two entries
            assert read_metric(server, "fsrst_reference_cache_entries", required=True) == 2
            assert read_metric(server, "fsrst_reference_cache_bytes", required=True) == \
                sum(a.feature_bytes for a in answers) > 0
            for key in (KEY_A, KEY_B):
                stub.DeleteReferences(fsrst_pb2.DeleteReferencesRequest(identity_id="temp"),
                                      timeout=30, metadata=auth(key))
        assert read_metric(server, "fsrst_reference_cache_entries", required=True) == 0
        assert read_metric(server, "fsrst_reference_cache_bytes", required=True) == 0
    finally:
        server.stop()


def test_ttl_expiry_frees_the_features_on_metrics():
    server = ServerProcess(small_model(), "--model_threads=1", "--max_batch_size=2",
                           "--identity_ttl_s=1")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
            refs = [rgb8(RNG.integers(0, 256, (128, 128, 3), dtype=np.uint8)) for _ in range(2)]
            answer = stub.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
                identity_id="brief", references=refs), timeout=30)
        assert read_metric(server, "fsrst_reference_cache_bytes", required=True) == \
            answer.feature_bytes
        # Expiry is the janitor's, every 100 ms past the 1 s TTL; wait for it, bounded.
        wait_for(lambda: read_metric(server, "fsrst_reference_cache_entries",
                                     required=True) == 0, 30,
                 "the janitor to expire the identity (fsrst_reference_cache_entries 0)",
                 poll_s=0.1)
        assert read_metric(server, "fsrst_reference_cache_entries", required=True) == 0
        assert read_metric(server, "fsrst_reference_cache_bytes", required=True) == 0
        assert read_metric(server, "fsrst_reference_cache_expirations_total", required=True) == 1
    finally:
        server.stop()


# --- Bad security settings stop the start ------------------------------------------------------

def test_malformed_key_file_exits_nonzero_naming_the_line(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{KEY_A} tenant-a\nsecret-without-tenant-0000000\n")
    server = ServerProcess(small_model(), f"--api_keys_file={keys}", wait=False)
    assert server.proc.wait(timeout=60) != 0
    out = server.output()
    server.stop()
    assert f"{keys}:2: expected `<key> <tenant>` (two fields), got 1" in out
    assert "secret-without-tenant" not in out and KEY_A not in out


def test_missing_certificate_exits_nonzero_naming_the_flag(pki):
    server = ServerProcess(small_model(), "--tls_cert=/nonexistent/server.pem",
                           f"--tls_key={pki['server.key']}", wait=False)
    assert server.proc.wait(timeout=60) != 0
    out = server.output()
    server.stop()
    assert "--tls_cert: cannot open /nonexistent/server.pem" in out


def test_help_documents_the_security_flags():
    from server_process import SERVER_BIN
    out = subprocess.run([SERVER_BIN, "--help"], capture_output=True, text=True)
    text = out.stdout + out.stderr
    for flag in ("--tls_cert", "--tls_key", "--tls_client_ca", "--api_keys_file"):
        assert flag in text, flag
