"""Issue 20, the shared reference store, end to end: real fsrst_server replicas on one real
redis-server (tests/redis_process.py), talking gRPC over real sockets. Register once on any
replica, served by every replica; deletion and expiry are fleet-wide within the stated bound;
a Redis that is down is UNAVAILABLE (never a false OK or a false NOT_FOUND) and recovery needs
no server restart; Redis holds no plaintext; replicas of two model versions share identities."""

import os
import struct
import time

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from PIL import Image

from redis_process import RedisProcess
from server_process import SERVER_BIN, ServerProcess, model_info, read_metric, small_model
import fsrst_pb2
import fsrst_pb2_grpc

RNG = np.random.default_rng(20)
KEY = bytes(range(32))  # the AES-256 key every replica of a test shares
REVALIDATE_S = 1        # --reference_store_revalidate_s in these tests


@pytest.fixture(autouse=True)
def _built():
    if not os.path.exists(SERVER_BIN):
        pytest.fail(f"{SERVER_BIN} is not built; run the test command from README.md")


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "store.key"
    path.write_bytes(KEY)
    return str(path)


@pytest.fixture
def redis():
    r = RedisProcess()
    yield r
    r.stop()


def replica(redis_url, key_file, *flags, model=None, wait=True):
    return ServerProcess(model or small_model(), "--model_threads=1", "--max_batch_size=2",
                         f"--reference_store={redis_url}", f"--reference_store_key_file={key_file}",
                         f"--reference_store_revalidate_s={REVALIDATE_S}", *flags, wait=wait)


def replicas(count, redis_url, key_file, *flags, models=None):
    """`count` replicas started side by side (they load in parallel)."""
    servers = [replica(redis_url, key_file, *flags, model=(models or [None] * count)[i],
                       wait=False) for i in range(count)]
    for s in servers:
        s.wait_serving()
    return servers


class Client:
    def __init__(self, server):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        self.stub = fsrst_pb2_grpc.FaceSuperResolutionStub(self.channel)

    def register(self, identity, refs, **kw):
        return self.stub.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
            identity_id=identity, references=[rgb8(r) for r in refs]), timeout=60, **kw)

    def enhance(self, identity, frame, **kw):
        return self.stub.Enhance(fsrst_pb2.EnhanceRequest(identity_id=identity, frame=rgb8(frame)),
                                 timeout=60, **kw)

    def delete(self, identity, **kw):
        return self.stub.DeleteReferences(fsrst_pb2.DeleteReferencesRequest(identity_id=identity),
                                          timeout=60, **kw)

    def close(self):
        self.channel.close()


def rgb8(array):
    h, w, _ = array.shape
    return fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_RGB8, data=array.tobytes(), width=w,
                           height=h)


def refs(n=3):
    return [RNG.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(n)]


def frame():
    return RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)


def code_of(call):
    try:
        call()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


def poll(condition, timeout_s=30.0):
    """Polls `condition` until true; returns the seconds it took (fails after timeout_s)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if condition():
            return time.monotonic() - start
        time.sleep(0.02)
    pytest.fail(f"condition not met within {timeout_s} s")


def stop_all(servers):
    for s in servers:
        s.stop()


def test_registered_on_one_replica_served_by_another_without_re_registering(redis, key_file):
    a, b = replicas(2, redis.url, key_file)
    try:
        ca, cb = Client(a), Client(b)
        people = {f"person-{i}": refs() for i in range(3)}
        for identity, r in people.items():
            assert ca.register(identity, r).reference_count == 3
        # b never saw a registration: every identity is a local miss, read through the store.
        f = frame()
        for identity in people:
            assert len(cb.enhance(identity, f).image.data) == 128 * 128 * 3
        assert read_metric(b, "fsrst_reference_read_throughs_total", result="OK") == 3
        # Same model version as a: a's features from the store, nothing encoded on b.
        assert read_metric(b, "fsrst_reference_stored_features_used_total") == 3
        assert read_metric(b, "fsrst_reference_reencodes_total") == 0
        # Then they are local hits: no more store reads.
        cb.enhance("person-0", f)
        assert read_metric(b, "fsrst_reference_read_throughs_total", result="OK") == 3
        assert read_metric(a, "fsrst_store_requests_total", operation="put", result="OK") == 3
        # The same frame and references give the same answer on both replicas.
        assert ca.enhance("person-1", f).image.data == cb.enhance("person-1", f).image.data
        # Unknown everywhere: NOT_FOUND with the usual message, and a store read to find out.
        code, details = code_of(lambda: cb.enhance("nobody", f))
        assert code == grpc.StatusCode.NOT_FOUND
        assert "call RegisterReferences again" in details
        assert read_metric(b, "fsrst_reference_read_throughs_total", result="NOT_FOUND") == 1
        ca.close(), cb.close()
    finally:
        stop_all([a, b])


def test_a_stream_of_an_identity_registered_elsewhere_is_served_in_order(redis, key_file):
    a, b = replicas(2, redis.url, key_file)
    try:
        Client(a).register("streamer", refs())
        channel = grpc.insecure_channel(f"127.0.0.1:{b.port}")
        stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
        requests = [fsrst_pb2.EnhanceRequest(identity_id="streamer", frame=rgb8(frame()),
                                             sequence_number=i) for i in range(20)]
        responses = list(stub.EnhanceStream(iter(requests), timeout=120))
        assert [r.sequence_number for r in responses] == list(range(20))
        assert all(not r.HasField("error") for r in responses), [r.error for r in responses]
        # 20 frames, up to 16 in flight, all waiting for the same identity: one store read, of
        # the features a registered (the references are not needed).
        assert read_metric(b, "fsrst_store_requests_total", operation="get_features",
                           result="OK") == 1
        assert read_metric(b, "fsrst_store_requests_total", operation="get", result="OK") == 0
        channel.close()
    finally:
        stop_all([a, b])


def test_delete_on_one_replica_is_not_found_on_every_replica_and_gone_from_redis(redis, key_file):
    a, b, c = replicas(3, redis.url, key_file)
    try:
        clients = [Client(s) for s in (a, b, c)]
        clients[0].register("alice", refs())
        f = frame()
        for client in clients:  # every replica holds alice in its local cache now
            client.enhance("alice", f)
        assert redis.keys("fsrst:ref:*") == ["fsrst:ref:/alice"]
        heard = [read_metric(s, "fsrst_reference_invalidations_received_total") for s in (a, c)]
        clients[1].delete("alice")
        assert redis.keys("fsrst:ref:*") == []
        # The invalidation message reaches the others; the bound holds regardless (next test).
        for server, client, before in zip((a, c), (clients[0], clients[2]), heard):
            poll(lambda: code_of(lambda: client.enhance("alice", f))[0] == grpc.StatusCode.NOT_FOUND,
                 timeout_s=REVALIDATE_S + 5)
            assert read_metric(server, "fsrst_reference_invalidations_received_total") == before + 1
        assert code_of(lambda: clients[1].enhance("alice", f))[0] == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: clients[2].delete("alice"))[0] == grpc.StatusCode.NOT_FOUND
        for client in clients:
            client.close()
    finally:
        stop_all([a, b, c])


def test_a_replica_that_missed_the_invalidation_stops_serving_within_the_bound(redis, key_file):
    """The key is deleted behind the replicas' back (redis-cli DEL, no message): the replica
    that cached it must stop serving it within --reference_store_revalidate_s (+ one round trip)
    on its own."""
    a = replica(redis.url, key_file)
    try:
        client = Client(a)
        client.register("bob", refs())
        f = frame()
        client.enhance("bob", f)
        assert redis.cli("DEL", "fsrst:ref:/bob") == b"1"
        deleted_at = time.monotonic()
        poll(lambda: code_of(lambda: client.enhance("bob", f))[0] == grpc.StatusCode.NOT_FOUND,
             timeout_s=30)
        took = time.monotonic() - deleted_at
        assert read_metric(a, "fsrst_reference_revalidation_drops_total") == 1
        assert read_metric(a, "fsrst_reference_invalidations_received_total") == 0
        # The bound is REVALIDATE_S plus one store round trip; 3 s of slack for a loaded machine.
        assert took <= REVALIDATE_S + 3, f"served a deleted identity for {took:.1f} s"
        client.close()
    finally:
        a.stop()


def test_ttl_expiry_is_fleet_wide(redis, key_file):
    a, b = replicas(2, redis.url, key_file, "--identity_ttl_s=2")
    try:
        ca, cb = Client(a), Client(b)
        ca.register("carol", refs())
        f = frame()
        cb.enhance("carol", f)  # read through: b caches it too
        pttl = int(redis.cli("PTTL", "fsrst:ref:/carol"))
        assert 0 < pttl <= 2000
        # Unused from now on: gone from both replicas and from Redis.
        poll(lambda: redis.keys("fsrst:ref:*") == [], timeout_s=30)
        for client in (ca, cb):
            assert code_of(lambda: client.enhance("carol", f))[0] == grpc.StatusCode.NOT_FOUND
        ca.close(), cb.close()
    finally:
        stop_all([a, b])


def test_use_on_any_replica_keeps_the_identity_alive_in_the_store(redis, key_file):
    a, b = replicas(2, redis.url, key_file, "--identity_ttl_s=3")
    try:
        ca, cb = Client(a), Client(b)
        ca.register("dave", refs())
        f = frame()
        end = time.monotonic() + 7  # more than twice the TTL
        while time.monotonic() < end:
            cb.enhance("dave", f)  # used on b only
            time.sleep(0.2)
        assert redis.keys("fsrst:ref:*") == ["fsrst:ref:/dave"]
        ca.enhance("dave", f)  # a dropped its idle copy long ago: read through again
        ca.close(), cb.close()
    finally:
        stop_all([a, b])


def test_redis_down_then_back_without_restarting_any_server(key_file):
    redis = RedisProcess(persist=True)
    a, b = replicas(2, redis.url, key_file, "--reference_store_timeout_ms=300")
    try:
        ca, cb = Client(a), Client(b)
        ca.register("erin", refs())
        f = frame()
        ca.enhance("erin", f)
        redis.kill()
        # Cached identities keep being served.
        for _ in range(5):
            assert len(ca.enhance("erin", f).image.data) == 128 * 128 * 3
        # A registration is not a false OK; a miss is not a false NOT_FOUND; nor a delete.
        code, details = code_of(lambda: ca.register("frank", refs()))
        assert code == grpc.StatusCode.UNAVAILABLE, details
        assert f"the reference store {redis.url} is unreachable" in details
        assert "nothing was stored" in details
        code, details = code_of(lambda: cb.enhance("erin", f))
        assert code == grpc.StatusCode.UNAVAILABLE, details
        assert "registering again would not help" in details
        code, details = code_of(lambda: ca.delete("erin"))
        assert code == grpc.StatusCode.UNAVAILABLE, details
        assert read_metric(a, "fsrst_store_requests_total", operation="put",
                           result="UNAVAILABLE") == 1
        assert len(ca.enhance("erin", f).image.data) == 128 * 128 * 3  # the failed delete lost nothing
        redis.start()  # same port, its append-only file restores what it held
        poll(lambda: code_of(lambda: ca.register("frank", refs()))[0] == grpc.StatusCode.OK)
        assert len(cb.enhance("erin", f).image.data) == 128 * 128 * 3
        assert len(cb.enhance("frank", f).image.data) == 128 * 128 * 3
        ca.close(), cb.close()
    finally:
        stop_all([a, b])
        redis.stop()


def test_redis_holds_no_plaintext_reference_or_feature_bytes(redis, key_file, tmp_path):
    a = replica(redis.url, key_file)
    try:
        references = refs(2)
        Client(a).register("grace", references)
        info = model_info(a)
        model_version = f"{info['model']}@{info['version']}"
    finally:
        a.stop()
    # The plaintext the server seals: the normalised luma the model takes (PIL's Y / 255 for a
    # 128x128 image), after a small header. Opening the value with the key proves the expected
    # plaintext is exactly right, so the "not in the dump" checks below can fail.
    luma = np.concatenate([np.asarray(Image.fromarray(r).convert("YCbCr").split()[0],
                                      dtype=np.float32).ravel() / 255.0 for r in references])
    luma_bytes = luma.astype("<f4").tobytes()
    value = redis.cli("HGET", "fsrst:ref:/grace", "v")
    assert value[0] == 1 and len(value) == 1 + 12 + 12 + len(luma_bytes) + 16
    plaintext = AESGCM(KEY).decrypt(value[1:13], value[13:], b"fsrst.references.v1\0\0grace")
    assert plaintext[12:] == luma_bytes
    # The features of this model version beside them: sealed under their version and the
    # generation; opened, they are the model's encoding of exactly that luma.
    generation = redis.cli("HGET", "fsrst:ref:/grace", "g")
    sealed = redis.cli("HGET", "fsrst:ref:/grace", f"f:{model_version}")
    features = AESGCM(KEY).decrypt(
        sealed[1:13], sealed[13:],
        b"fsrst.features.v1\0\0grace\0" + model_version.encode() + b"\0" + generation)
    import torch  # Debian's, only here: the rest of the module needs no torch
    encoded = torch.jit.load(small_model()).encode_references(
        torch.from_numpy(luma.reshape(2, 1, 128, 128)))
    header = (b"FSRF" + struct.pack("<III", 1, 1, len(info["model"])) + info["model"].encode()
              + struct.pack("<I", len(info["version"])) + info["version"].encode()
              + struct.pack("<Iqqqq", 4, *encoded.shape))
    assert features[:len(header)] == header
    feature_bytes = features[len(header):]
    np.testing.assert_allclose(np.frombuffer(feature_bytes, dtype="<f4"),
                               encoded.detach().numpy().ravel(), atol=1e-4, rtol=1e-4)
    dump = redis.rdb_dump(str(tmp_path / "dump.rdb"))
    raw_refs = b"".join(r.tobytes() for r in references)
    for blob in (value, sealed, dump):
        for offset in range(0, len(luma_bytes) - 64, 4096):
            assert luma_bytes[offset:offset + 64] not in blob
        for offset in range(0, len(raw_refs) - 64, 4096):
            assert raw_refs[offset:offset + 64] not in blob
        for offset in range(0, len(feature_bytes) - 64, 1024):
            assert feature_bytes[offset:offset + 64] not in blob
    # Only the sealed values and a random generation are stored.
    assert sorted(redis.cli("HKEYS", "fsrst:ref:/grace").split(b"\n")) == [
        f"f:{model_version}".encode(), b"g", b"v"]


def test_features_are_shared_per_model_version(redis, key_file):
    """Registered on an fsrst_x4_small replica: another fsrst_x4_small replica serves it from
    the stored features (no encode); an fsrst_x4 replica encodes the references once and writes
    its features back, and a second fsrst_x4 replica then serves it with no encode either."""
    weights = os.path.dirname(small_model())
    big = os.path.join(weights, "fsrst_x4.pt")
    small_a, small_b, big_c, big_d = replicas(4, redis.url, key_file,
                                              models=[None, None, big, big])
    try:
        clients = [Client(s) for s in (small_a, small_b, big_c, big_d)]
        r = refs()
        clients[0].register("erin", r)
        f = frame()
        served_b = clients[1].enhance("erin", f).image.data
        assert read_metric(small_b, "fsrst_reference_stored_features_used_total") == 1
        assert read_metric(small_b, "fsrst_reference_reencodes_total") == 0
        assert served_b == clients[0].enhance("erin", f).image.data
        served_c = clients[2].enhance("erin", f).image.data
        assert read_metric(big_c, "fsrst_reference_reencodes_total") == 1
        assert read_metric(big_c, "fsrst_reference_stored_features_used_total") == 0
        # The write-back follows the answer: wait for it to be stored, then look.
        poll(lambda: read_metric(big_c, "fsrst_store_requests_total", operation="put_features",
                                 result="OK") == 1)
        info = model_info(big_c)
        assert redis.cli("HEXISTS", "fsrst:ref:/erin", f"f:{info['model']}@{info['version']}") \
            == b"1"
        served_d = clients[3].enhance("erin", f).image.data
        assert read_metric(big_d, "fsrst_reference_stored_features_used_total") == 1
        assert read_metric(big_d, "fsrst_reference_reencodes_total") == 0
        assert served_d == served_c
        # Registering again removes every version's features with the old references.
        clients[1].register("erin", refs())
        assert sorted(redis.cli("HKEYS", "fsrst:ref:/erin").split(b"\n")) == [
            f"f:{model_info(small_b)['model']}@{model_info(small_b)['version']}".encode(),
            b"g", b"v"]
        for client in clients:
            client.close()
    finally:
        stop_all([small_a, small_b, big_c, big_d])


def test_x4_and_x4_small_replicas_serve_each_others_identities(redis, key_file):
    weights = os.path.dirname(small_model())
    big, small = replicas(2, redis.url, key_file,
                          models=[os.path.join(weights, "fsrst_x4.pt"), small_model()])
    try:
        cbig, csmall = Client(big), Client(small)
        r_big, r_small = refs(), refs()
        cbig.register("via-x4", r_big)
        csmall.register("via-x4-small", r_small)
        f = frame()
        # Each re-encodes the other's references with its own model: the answer equals what a
        # registration on itself gives.
        served = csmall.enhance("via-x4", f).image.data
        csmall.register("local-copy", r_big)
        assert served == csmall.enhance("local-copy", f).image.data
        served = cbig.enhance("via-x4-small", f).image.data
        cbig.register("local-copy", r_small)
        assert served == cbig.enhance("local-copy", f).image.data
        for server in (big, small):
            assert read_metric(server, "fsrst_reference_reencodes_total") == 1
        cbig.close(), csmall.close()
    finally:
        stop_all([big, small])


def test_bad_stored_features_are_refused_and_the_references_serve_instead(redis, key_file):
    """Stored features of this version that do not open (one byte changed in Redis) never fail
    a frame and never crash the replica: it encodes the references instead and writes good
    features back. (Validly sealed features of a wrong shape: SharedFeaturesTest.)"""
    a, b = replicas(2, redis.url, key_file)
    try:
        ca, cb = Client(a), Client(b)
        ca.register("frank", refs())
        field = f"f:{model_info(b)['model']}@{model_info(b)['version']}"
        sealed = redis.cli("HGET", "fsrst:ref:/frank", field)
        # Changed inside Redis: the value holds NUL bytes, which no command line can carry.
        assert redis.cli("EVAL", "local v = redis.call('HGET', KEYS[1], ARGV[1]) "
                         "local i = #v - 40 "
                         "return redis.call('HSET', KEYS[1], ARGV[1], string.sub(v, 1, i - 1) "
                         ".. string.char((string.byte(v, i) + 1) % 256) .. string.sub(v, i + 1))",
                         "1", "fsrst:ref:/frank", field) == b"0"
        tampered = redis.cli("HGET", "fsrst:ref:/frank", field)
        assert tampered != sealed and len(tampered) == len(sealed)
        f = frame()
        served = cb.enhance("frank", f).image.data
        assert served == ca.enhance("frank", f).image.data
        assert read_metric(b, "fsrst_reference_stored_features_refused_total") == 1
        assert read_metric(b, "fsrst_reference_reencodes_total") == 1
        assert read_metric(b, "fsrst_reference_stored_features_used_total") == 0
        # The write-back replaced the bad value with one that opens.
        poll(lambda: read_metric(b, "fsrst_store_requests_total", operation="put_features",
                                 result="OK") == 1)
        assert redis.cli("HGET", "fsrst:ref:/frank", field) != tampered
        ca.close(), cb.close()
    finally:
        stop_all([a, b])


def test_tenants_stay_apart_through_the_store(redis, key_file, tmp_path):
    keys = tmp_path / "api_keys"
    keys.write_text("key-a-0123456789abcdef tenant-a\nkey-b-0123456789abcdef tenant-b\n")
    a, b = replicas(2, redis.url, key_file, f"--api_keys_file={keys}")
    try:
        ca, cb = Client(a), Client(b)
        auth_a = (("authorization", "Bearer key-a-0123456789abcdef"),)
        auth_b = (("authorization", "Bearer key-b-0123456789abcdef"),)
        ca.register("alice", refs(), metadata=auth_a)
        f = frame()
        code, details = code_of(lambda: cb.enhance("alice", f, metadata=auth_b))
        assert code == grpc.StatusCode.NOT_FOUND
        assert "tenant" not in details
        assert len(cb.enhance("alice", f, metadata=auth_a).image.data) == 128 * 128 * 3
        assert code_of(lambda: cb.delete("alice", metadata=auth_b))[0] == grpc.StatusCode.NOT_FOUND
        assert redis.keys("fsrst:ref:*") == ["fsrst:ref:tenant-a/alice"]
        ca.close(), cb.close()
    finally:
        stop_all([a, b])


def test_re_registration_elsewhere_replaces_every_cached_copy(redis, key_file):
    a, b = replicas(2, redis.url, key_file)
    try:
        ca, cb = Client(a), Client(b)
        old, new = refs(), refs()
        ca.register("heidi", old)
        f = frame()
        before = cb.enhance("heidi", f).image.data
        ca.register("heidi", new)
        expected = ca.enhance("heidi", f).image.data
        assert expected != before
        poll(lambda: cb.enhance("heidi", f).image.data == expected,
             timeout_s=REVALIDATE_S + 5)
        ca.close(), cb.close()
    finally:
        stop_all([a, b])


def start_refused(*flags):
    import subprocess
    return subprocess.run([SERVER_BIN, f"--model={small_model()}", "--host=127.0.0.1", "--port=0",
                           "--metrics_port=-1", "--device=cpu", *flags],
                          capture_output=True, text=True, timeout=120)


def test_store_flags_are_checked_before_serving(tmp_path, key_file):
    short = tmp_path / "short.key"
    short.write_bytes(b"TOPSECRET")
    cases = [
        (["--reference_store=redis://127.0.0.1:6379"],
         "--reference_store_key_file: expected a file of 32 random bytes"),
        (["--reference_store=redis://127.0.0.1:6379", f"--reference_store_key_file={short}"],
         f"--reference_store_key_file={short}: expected a file of exactly 32 random bytes"),
        (["--reference_store=127.0.0.1:6379", f"--reference_store_key_file={key_file}"],
         "--reference_store=127.0.0.1:6379: not a redis:// URL; expected redis://host:port"),
        (["--reference_store=redis://u:p@h:1", f"--reference_store_key_file={key_file}"],
         "credentials do not belong in the URL"),
        ([f"--reference_store_key_file={key_file}"],
         "only meaningful with --reference_store=redis://host:port"),
        (["--reference_store=redis://127.0.0.1:6379", f"--reference_store_key_file={key_file}",
          "--reference_store_password_file=/nonexistent/pass"],
         "--reference_store_password_file=/nonexistent/pass: cannot open the file"),
        (["--reference_store=redis://127.0.0.1:6379", f"--reference_store_key_file={key_file}",
          "--reference_store_key_prefix=a b"],
         "--reference_store_key_prefix=a b: expected at most 64 characters without whitespace"),
    ]
    for flags, message in cases:
        result = start_refused(*flags)
        assert result.returncode != 0, flags
        assert message in result.stderr, (flags, result.stderr)
        assert "SERVING" not in result.stderr
        assert "TOPSECRET" not in result.stderr


def test_password_is_used_and_no_secret_reaches_the_log(tmp_path):
    redis = RedisProcess(password="redis-pass-xyz")
    password = tmp_path / "password"
    password.write_text("redis-pass-xyz\n")  # as a Kubernetes Secret file may end
    key = tmp_path / "key"
    printable_key = b"PRINTABLE-KEY-0123456789abcdefgh"
    key.write_bytes(printable_key)
    a = replica(redis.url, str(key), f"--reference_store_password_file={password}")
    try:
        Client(a).register("ivan", refs())
        assert redis.keys("fsrst:ref:*") == ["fsrst:ref:/ivan"]
        redis.kill()
        code_of(lambda: Client(a).register("judy", refs()))
    finally:
        a.stop()
        redis.stop()
    log = a.output()
    assert "shared through " + redis.url in log
    assert "redis-pass-xyz" not in log
    assert printable_key.decode() not in log


def test_get_identity_on_a_replica_that_never_saw_it_reads_it_through(redis, key_file):
    a, b = replicas(2, redis.url, key_file)
    try:
        ca, cb = Client(a), Client(b)
        assert ca.register("gi-fleet", refs(2)).reference_count == 2
        ca.enhance("gi-fleet", frame())
        # b never saw it: GetIdentity reads it through (no false NOT_FOUND), with b's own
        # figures (no frame served there yet).
        info = cb.stub.GetIdentity(fsrst_pb2.GetIdentityRequest(identity_id="gi-fleet"),
                                   timeout=60)
        assert (info.reference_count, info.frames_served) == (2, 0)
        assert read_metric(b, "fsrst_reference_read_throughs_total", result="OK") == 1
        there = ca.stub.GetIdentity(fsrst_pb2.GetIdentityRequest(identity_id="gi-fleet"),
                                    timeout=60)
        assert there.frames_served == 1 and len(there.mean_reference_weights) == 2
        code, message = code_of(lambda: cb.stub.GetIdentity(
            fsrst_pb2.GetIdentityRequest(identity_id="gi-nowhere"), timeout=60))
        assert code == grpc.StatusCode.NOT_FOUND and "call RegisterReferences again" in message
        ca.close()
        cb.close()
    finally:
        stop_all([a, b])
