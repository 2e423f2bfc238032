"""Identity-affine routing, for real: three fsrst_server replicas behind Debian's nginx
running deploy/nginx/fsrst-grpc.conf (`hash $http_x_fsrst_identity consistent;`), and the
Python client, which sends that header. Which replica served a stream is read from the
replicas' own fsrst_frames_enhanced_total counters."""

import collections
import threading
import time

import numpy as np
import pytest

from deploy_util import Nginx, serving_replicas
from server_process import read_metric, wait_for
from fsrst_client import FsrstClient

IDENTITIES = [f"person-{i:02d}" for i in range(50)]
FRAMES_PER_STREAM = 3


@pytest.fixture(scope="module")
def replicas():
    """Shared by the module's tests: the kill test, which runs last, kills one of them."""
    yield from serving_replicas(3)


@pytest.fixture(scope="module")
def proxy(replicas):
    nginx = Nginx([server.port for server in replicas])
    yield nginx
    nginx.stop()


@pytest.fixture
def client(proxy):
    with FsrstClient(f"127.0.0.1:{proxy.port}", timeout_s=60) as c:
        yield c


def images(seed: int):
    rng = np.random.default_rng(seed)
    references = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2)]
    frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return references, frame


def frames_served(servers) -> list:
    return [read_metric(server, "fsrst_frames_enhanced_total", required=True) for server in servers]


def serving_replica(client, servers, identity: str, frame) -> int:
    """Streams FRAMES_PER_STREAM frames of the identity (nothing else runs meanwhile)
    and returns the index of the one replica whose counter grew by exactly that."""
    before = frames_served(servers)
    faces = list(client.enhance_stream(identity, [frame] * FRAMES_PER_STREAM))
    assert [face.shape for face in faces] == [(128, 128, 3)] * FRAMES_PER_STREAM
    grown = [after - b for after, b in zip(frames_served(servers), before)]
    served = [i for i, frames in enumerate(grown) if frames]
    assert len(served) == 1 and grown[served[0]] == FRAMES_PER_STREAM, (
        f"{identity}: frames per replica {grown}")
    return served[0]


def register_and_locate(client, servers):
    """{identity: replica index} for the 50 identities, registered through the proxy."""
    home = {}
    for n, identity in enumerate(IDENTITIES):
        references, frame = images(n)
        client.register_references(identity, references)
        home[identity] = serving_replica(client, servers, identity, frame)
    return home


def test_each_identity_is_served_by_one_replica(replicas, client):
    home = register_and_locate(client, replicas)
    for n, identity in enumerate(IDENTITIES):  # a second visit lands on the same replica
        assert serving_replica(client, replicas, identity, images(n)[1]) == home[identity]
    per_replica = collections.Counter(home.values())
    assert len(per_replica) >= 2, f"the hash sent every identity to one replica: {per_replica}"
    for i, server in enumerate(replicas):
        # an identity's features live only where it is served, and no frame ever reached a
        # replica without them (a miss would be a NOT_FOUND and a re-registration)
        assert read_metric(server, "fsrst_reference_cache_entries", required=True) == per_replica[i]
        assert read_metric(server, "fsrst_reference_cache_misses_total", required=True) == 0


class StreamWorker(threading.Thread):
    """Streams its identities' frames round and round until stopped; keeps every error."""

    FRAMES = 6

    def __init__(self, client, identities):
        super().__init__(daemon=True)
        self.client = client
        self.identities = identities
        self.stop = threading.Event()
        self.errors = []
        self.frames_sent = 0
        self.faces = 0
        self.streams_started_after = collections.defaultdict(int)  # mark -> streams done
        self.marks = []  # times after which completed streams are counted

    def run(self):
        while not self.stop.is_set():
            for identity in self.identities:
                if self.stop.is_set():
                    return
                frame = images(IDENTITIES.index(identity))[1]
                started = time.monotonic()
                self.frames_sent += self.FRAMES
                try:
                    for face in self.client.enhance_stream(identity, [frame] * self.FRAMES):
                        assert face.shape == (128, 128, 3)
                        self.faces += 1
                except Exception as error:  # anything that reaches the caller is a failure
                    self.errors.append(f"{identity}: {error!r}")
                for mark in self.marks:
                    if started > mark:
                        self.streams_started_after[mark] += 1


def test_killed_replica_loses_no_frame(replicas, proxy, client):
    home = register_and_locate(client, replicas)
    per_replica = collections.Counter(home.values())
    victim = per_replica.most_common(1)[0][0]
    moved = [identity for identity in IDENTITIES if home[identity] == victim]
    stayed = [identity for identity in IDENTITIES if home[identity] != victim]
    # four streams at a time on the victim's identities, so calls are in flight when it dies
    workers = [StreamWorker(client, moved[i::4]) for i in range(min(4, len(moved)))]
    workers += [StreamWorker(client, stayed)]
    for worker in workers:
        worker.start()
    wait_for(lambda: all(worker.faces >= StreamWorker.FRAMES for worker in workers), 60,
             "the streams to start", poll_s=0.05)

    replicas[victim].proc.kill()
    killed_at = time.monotonic()
    for worker in workers:
        worker.marks.append(killed_at)
    # the victim's identities are all streamed again after the kill, the others' keep going
    wait_for(lambda: (all(worker.streams_started_after[killed_at] >= len(worker.identities)
                          for worker in workers[:-1])
                      and workers[-1].streams_started_after[killed_at] >= 3), 120,
             "the streams to go on after the kill (else they stalled)", poll_s=0.05)
    for worker in workers:
        worker.stop.set()
    for worker in workers:
        worker.join(timeout=60)
        assert not worker.is_alive()

    assert [error for worker in workers for error in worker.errors] == []
    assert sum(w.faces for w in workers) == sum(w.frames_sent for w in workers)
    # the kill cut streams in flight: nginx logged an error for an EnhanceStream call to the
    # killed replica (a FIN gives "upstream prematurely closed connection", a reset
    # "Connection reset by peer"; which one depends on where the kill lands) ...
    victim_upstream = f'upstream: "grpc://127.0.0.1:{replicas[victim].port}"'
    cut = [line for line in proxy.errors().splitlines()
           if "[error]" in line and "EnhanceStream" in line and victim_upstream in line]
    assert cut, proxy.errors()
    survivors = [server for i, server in enumerate(replicas) if i != victim]
    # ... and the moved identities were re-registered on the survivors after a NOT_FOUND:
    # every identity is cached on exactly one survivor
    assert sum(read_metric(s, "fsrst_reference_cache_misses_total", required=True)
               for s in survivors) > 0
    assert sum(read_metric(s, "fsrst_reference_cache_entries", required=True)
               for s in survivors) == 50
