"""FsrstClient: the Python client of fsrst_server, with transparent re-registration.

The client keeps every identity's references. When the server answers
NOT_FOUND for an identity this client registered (restart, eviction, expiry,
another replica), it registers them again and sends the frame once more, so the
server's reference cache is invisible to callers. Every identity-bound call
carries the metadata x-fsrst-identity for identity-affine load balancing.

Thread-safe: one client may be shared by threads. Registrations,
re-registrations and the deletion of one identity are serialised, and a burst
of NOT_FOUND answers (many threads or stream frames at once after a restart)
re-registers once, not once per frame.
"""

import collections
import io
import os
import random
import string
import threading
import time
from typing import Iterable, Iterator, NamedTuple, Optional, Sequence, Tuple, Union

import grpc
import numpy as np
from PIL import Image

from fsrst_client._stubs import fsrst_pb2, fsrst_pb2_grpc, health_pb2, health_pb2_grpc

IDENTITY_METADATA_KEY = "x-fsrst-identity"
ImageLike = Union[np.ndarray, Image.Image, str, os.PathLike]
_ENCODINGS = {"rgb8": fsrst_pb2.ENCODING_RGB8, "jpeg": fsrst_pb2.ENCODING_JPEG}
_CODES = {code.value[0]: code for code in grpc.StatusCode}
# A call refused or cut because its server went away (a draining replica's
# UNAVAILABLE "the server is shutting down; retry on another replica", a broken
# connection, a replica killed behind a proxy: nginx resets the HTTP/2 stream and
# gRPC reports INTERNAL "Received RST_STREAM ...") is tried again on a new call:
# unary calls up to _MAX_ATTEMPTS times, a stream reopened up to _STREAM_REOPENS
# times in a row without a frame answered in between; always within the caller's
# deadline. The waits between tries grow from _INITIAL_BACKOFF_S to _MAX_BACKOFF_S
# (each drawn in [half, all] of that, so a replica's callers do not come back in
# step), up to about 9 s in all, so a drain or a restarted replica's warm-up fits in it.
# A new call through nginx picks its upstream again (no connection of nginx's is
# reused for it), and one straight to a server that went away reconnects.
_MAX_ATTEMPTS = 10
_STREAM_REOPENS = 10
_INITIAL_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 2.0
# Identity ids as the server accepts them (server/request_validation.cc).
_MAX_IDENTITY_ID_LENGTH = 128
_IDENTITY_ID_RULE = "only [A-Za-z0-9._:@-]"
_IDENTITY_ID_CHARS = frozenset(string.ascii_letters + string.digits + "._:@-")


class Enhanced(NamedTuple):
    """A frame's answer with its reference weights (enhance/enhance_stream with
    with_weights=True)."""
    image: np.ndarray
    # Each reference's mean aggregation weight over the frame, in registration
    # order; 1 - sum is the share the model took from none of them. Empty without
    # references or when the server's model reports none (server_info().reference_weights).
    weights: Tuple[float, ...]


class FsrstError(Exception):
    """A call, or one frame of a stream, failed.

    Attributes:
        code: the grpc.StatusCode (e.g. grpc.StatusCode.NOT_FOUND).
        message: the server's message (it names the field and the expected value).
        sequence_number: on a stream, the index of the failed frame; else None.
    """

    def __init__(self, code: grpc.StatusCode, message: str,
                 sequence_number: Optional[int] = None):
        where = "" if sequence_number is None else f" (frame {sequence_number})"
        super().__init__(f"{code.name}{where}: {message}")
        self.code = code
        self.message = message
        self.sequence_number = sequence_number


# The message gRPC core gives a call it ends because its server began to shut down
# before any handler took the call.
_SHUTDOWN_CANCELLED = "CANCELLED"


def _retryable(code: grpc.StatusCode, message: str) -> bool:
    """The call (or frame) failed because its server is going away or could not be
    reached, not because of what it sent: another try may reach another replica."""
    # A stream reset by the peer (a proxy whose upstream went away: INTERNAL), or a
    # call that reached a server as its Shutdown began: gRPC core ends such a call,
    # never run, with CANCELLED "CANCELLED" (grpc/grpc#41785). Never one we cancelled:
    # gRPC words those "Locally cancelled by application!".
    return (code == grpc.StatusCode.UNAVAILABLE or message.startswith("Received RST_STREAM")
            or (code == grpc.StatusCode.CANCELLED and message == _SHUTDOWN_CANCELLED))


def _backoff_s(retry: int) -> float:
    """How long to wait before retry number `retry` (1, 2, ...)."""
    ceiling = min(_MAX_BACKOFF_S, _INITIAL_BACKOFF_S * 2 ** (retry - 1))
    return ceiling * random.uniform(0.5, 1.0)


def _describe(character: str) -> str:
    """As the server quotes a refused character (common/identity_id.cc)."""
    code = ord(character)
    if 0x20 <= code < 0x7f:
        return f"'{character}'"
    if code < 0x80 or 0xd800 <= code <= 0xdfff:
        return f"U+{code:04X}"
    return f"'{character}', U+{code:04X}"


def check_identity_id(identity_id: str) -> None:
    """Raises FsrstError INVALID_ARGUMENT, with the server's message, for an id the
    server would refuse (ids travel as gRPC metadata, which takes no other bytes)."""
    length = len(identity_id.encode("utf-8"))
    if length == 0 or length > _MAX_IDENTITY_ID_LENGTH:
        raise FsrstError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"identity_id: expected 1 to {_MAX_IDENTITY_ID_LENGTH} characters, "
                         f"got {length}")
    position = 1  # counted in bytes, as the server does; the same as characters up to the
    for character in identity_id:  # first refused one, since every allowed one is ASCII
        if character not in _IDENTITY_ID_CHARS:
            raise FsrstError(grpc.StatusCode.INVALID_ARGUMENT,
                             f"identity_id: character {position} ({_describe(character)}) is "
                             f"not allowed; expected {_IDENTITY_ID_RULE}")
        position += 1


def to_array(image: ImageLike) -> np.ndarray:
    """An HxWx3 uint8 RGB array from an HxWx3 (or HxW grey) uint8 array, a PIL
    image or an image file path."""
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {array.dtype} "
                         "(scale floats in [0, 1] by 255 and round first)")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {array.shape}")
    return np.ascontiguousarray(array)


def _is_jpeg_file(image) -> bool:
    if not isinstance(image, (str, os.PathLike)):
        return False
    with open(image, "rb") as f:
        return f.read(3) == b"\xff\xd8\xff"


def to_proto(image: ImageLike, encoding: str = "rgb8", jpeg_quality: int = 95) -> "fsrst_pb2.Image":
    """An Image message: raw RGB8, or JPEG ("jpeg": a JPEG file's own bytes are
    sent as they are, anything else is encoded at jpeg_quality)."""
    if encoding not in _ENCODINGS:
        raise ValueError(f"encoding must be 'rgb8' or 'jpeg', not {encoding!r}")
    if encoding == "jpeg" and _is_jpeg_file(image):
        with open(image, "rb") as f:
            return fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_JPEG, data=f.read())
    array = to_array(image)
    height, width, _ = array.shape
    if encoding == "jpeg":
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "JPEG", quality=jpeg_quality, subsampling=0)
        return fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_JPEG, data=buffer.getvalue())
    return fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_RGB8, data=array.tobytes(), width=width,
                           height=height)


def from_proto(image: "fsrst_pb2.Image") -> np.ndarray:
    """The HxWx3 uint8 array an Image message holds."""
    if image.encoding == fsrst_pb2.ENCODING_JPEG:
        with Image.open(io.BytesIO(image.data)) as decoded:
            return np.asarray(decoded.convert("RGB"))
    if len(image.data) != image.width * image.height * 3:
        raise ValueError(f"RGB8 image of {image.width}x{image.height} has {len(image.data)} "
                         f"bytes, expected {image.width * image.height * 3}")
    return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 3).copy()


def _ssl_credentials(tls_ca: str, tls_cert: Optional[str],
                     tls_key: Optional[str]) -> grpc.ChannelCredentials:
    def read(path):
        with open(path, "rb") as f:
            return f.read()
    return grpc.ssl_channel_credentials(
        root_certificates=read(tls_ca), private_key=read(tls_key) if tls_key else None,
        certificate_chain=read(tls_cert) if tls_cert else None)


class _Identity:
    """What the client keeps of one identity. `lock` serialises its registrations."""

    def __init__(self):
        self.lock = threading.Lock()
        self.references = None  # [fsrst_pb2.Image] once the server accepted them
        self.epoch = 0  # bumped by every (re-)registration


class FsrstClient:
    """A client of one fsrst_server (or of a load-balanced set of replicas).

    Rolling updates are invisible to callers: a call refused or cut because its
    server drains or went away (UNAVAILABLE, or a reset stream) is made again,
    up to 10 tries with a growing wait (50 ms to 2 s) and within the deadline;
    a stream is reopened and its unanswered frames sent again in order (see
    enhance_stream). Other errors (INVALID_ARGUMENT, UNAUTHENTICATED, ...) are
    raised at once. Identity ids are checked here as the server checks them.

    Args:
        target: "host:port".
        timeout_s: deadline of each unary call; for enhance() it covers the
            re-registration and the retry too. None: no deadline.
        encoding: how images are sent, "rgb8" (lossless) or "jpeg".
        channel: an existing grpc.Channel to use instead of `target` (the client
            closes it on close()).
        wait_for_ready: wait (within the deadline) for an unreachable server
            instead of failing with UNAVAILABLE at once.
        api_key: sent on every call as "authorization: Bearer <api_key>" (servers
            run with --api_keys_file require it). None: no key.
        tls_ca: path of the PEM CA that signed the server's certificate; set, the
            channel uses TLS (servers run with --tls_cert/--tls_key).
        tls_cert, tls_key: paths of a PEM client certificate and its key, for
            servers that require client certificates (--tls_client_ca, mTLS).
    """

    def __init__(self, target: str = "localhost:50051", timeout_s: Optional[float] = 30.0,
                 encoding: str = "rgb8", channel: Optional[grpc.Channel] = None,
                 wait_for_ready: bool = False, api_key: Optional[str] = None,
                 tls_ca: Optional[str] = None, tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None):
        if encoding not in _ENCODINGS:
            raise ValueError(f"encoding must be 'rgb8' or 'jpeg', not {encoding!r}")
        if (tls_cert is None) != (tls_key is None) or (tls_cert is not None and tls_ca is None):
            raise ValueError("tls_cert and tls_key: expected both (mTLS) or neither, and "
                             "tls_ca with them")
        options = [("grpc.max_send_message_length", 64 << 20),
                   ("grpc.max_receive_message_length", 64 << 20)]
        if channel is None and tls_ca is not None:
            channel = grpc.secure_channel(target, _ssl_credentials(tls_ca, tls_cert, tls_key),
                                          options=options)
        self._channel = channel or grpc.insecure_channel(target, options=options)
        self._auth = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._stub = fsrst_pb2_grpc.FaceSuperResolutionStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._timeout_s = timeout_s
        self._encoding = encoding
        self._wait_for_ready = wait_for_ready
        self._lock = threading.Lock()
        self._identities = {}  # identity_id -> _Identity, guarded by _lock
        self._calls_retried = 0  # guarded by _lock
        self._streams_reopened = 0  # guarded by _lock
        self._reregistrations = 0  # guarded by _lock

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Public API ---------------------------------------------------------------------------

    def register_references(self, identity_id: str, images: Sequence[ImageLike],
                            encoding: Optional[str] = None
                            ) -> "fsrst_pb2.RegisterReferencesResponse":
        """Registers the identity's reference photos (any size; the server
        centre-crops and resizes them), replacing earlier ones, and keeps them
        for re-registration. Returns the server's answer (reference_count,
        feature_bytes)."""
        check_identity_id(identity_id)
        references = [to_proto(image, encoding or self._encoding) for image in images]
        identity = self._identity(identity_id)
        with identity.lock:
            response = self._register(identity_id, references, self._deadline())
            identity.references = references
            identity.epoch += 1
        return response

    def enhance(self, identity_id: str, frame: ImageLike, output: str = "rgb8", *,
                references: Optional[Sequence[ImageLike]] = None, encoding: Optional[str] = None,
                jpeg_quality: int = 0, frame_timeout_ms: int = 0,
                with_weights: bool = False) -> Union[np.ndarray, Enhanced]:
        """Enhances one lr_size x lr_size frame; returns the HxWx3 uint8 face, or
        with_weights=True an Enhanced(image, weights).

        identity_id: a registered identity, or "" for the stateless path with the
        inline `references` (encoded by the server for this request only) or none.
        output: the encoding the server answers in, "rgb8" or "jpeg" (decoded here).
        A NOT_FOUND answer for an identity this client registered re-registers it
        and sends the frame once more."""
        if references is not None and identity_id:
            raise ValueError("inline references are only for identity_id ''")
        if identity_id:
            check_identity_id(identity_id)
        request = self._enhance_request(identity_id, frame, output, encoding, jpeg_quality,
                                        frame_timeout_ms)
        if references is not None:
            request.references.extend(to_proto(r, encoding or self._encoding) for r in references)
        deadline = self._deadline()
        epoch = self._epoch(identity_id)
        try:
            response = self._call(self._stub.Enhance, request, identity_id, deadline)
        except FsrstError as error:
            if (error.code != grpc.StatusCode.NOT_FOUND or not identity_id
                    or not self._reregister(identity_id, epoch, deadline)):
                raise
            response = self._call(self._stub.Enhance, request, identity_id, deadline)
        return _result(response, with_weights)

    def enhance_stream(self, identity_id: str, frames: Iterable[ImageLike], output: str = "rgb8",
                       *, encoding: Optional[str] = None, jpeg_quality: int = 0,
                       frame_timeout_ms: int = 0, timeout_s: Optional[float] = None,
                       max_in_flight: int = 16, return_errors: bool = False,
                       with_weights: bool = False
                       ) -> Iterator[Union[np.ndarray, Enhanced, FsrstError]]:
        """Enhances the frames of one identity on one EnhanceStream call and
        yields the faces in frame order, as they come back.

        `frames` is consumed lazily, at most max_in_flight frames ahead of what
        has been yielded. A frame answered NOT_FOUND re-registers the identity
        (once for all frames that were already on their way) and is sent again,
        once; later frames that came back meanwhile wait for it, so the order
        holds. When the call is refused or cut because its server goes away (a
        draining replica answers a frame UNAVAILABLE, or the call ends UNAVAILABLE
        or with a reset stream), the call is cancelled and a new one opened, and
        the frames not yet answered are sent again on it, in order; through an
        identity-hashing proxy it reaches another replica, which answers
        NOT_FOUND and gets the references again (a frame answered NOT_FOUND again
        after that also reopens: the call and the registration reached different
        replicas). Up to 10 reopens in a row with no frame answered in between,
        50 ms to 2 s apart, within timeout_s; then the last error is raised. Any
        other failed frame raises FsrstError (its sequence_number is the frame's
        index) when its turn comes and ends the stream, or with
        return_errors=True is yielded in its place and the stream goes on.
        timeout_s: deadline of the whole stream; None: none (video runs long).
        with_weights: yield Enhanced(image, weights) instead of the image.
        Leaving the loop early cancels the call."""
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        if identity_id:
            check_identity_id(identity_id)
        stream = _FrameStream(self, identity_id, iter(frames), output, encoding, jpeg_quality,
                              frame_timeout_ms, max_in_flight, with_weights)
        return stream.run(timeout_s, return_errors)

    def delete_references(self, identity_id: str) -> None:
        """Forgets the identity here and drops it on the server. NOT_FOUND only if
        neither this client nor the server knew it."""
        check_identity_id(identity_id)
        with self._lock:
            identity = self._identities.pop(identity_id, None)
        if identity is None:
            self._delete(identity_id)
            return
        with identity.lock:
            known = identity.references is not None
            identity.references = None
            try:
                self._delete(identity_id)
            except FsrstError as error:
                # The server had already lost it (restart, eviction): gone either way.
                if not (known and error.code == grpc.StatusCode.NOT_FOUND):
                    raise

    def get_identity(self, identity_id: str) -> "fsrst_pb2.GetIdentityResponse":
        """What the server holds and has served for the identity: reference_count,
        feature_bytes, registered/last-used times (Unix ms), frames_served and each
        reference's mean weight (mean_reference_weights, registration order).
        NOT_FOUND (FsrstError) if the server does not hold it."""
        check_identity_id(identity_id)
        return self._call(self._stub.GetIdentity,
                          fsrst_pb2.GetIdentityRequest(identity_id=identity_id), identity_id,
                          self._deadline())

    def server_info(self) -> "fsrst_pb2.GetServerInfoResponse":
        """The model (name, version, trained, device), sizes and limits the server runs with."""
        return self._call(self._stub.GetServerInfo, fsrst_pb2.GetServerInfoRequest(), "",
                          self._deadline())

    def health(self, service: str = "") -> str:
        """The grpc.health.v1 status: "SERVING", "NOT_SERVING", ... Not retried:
        a probe reports the server's state now."""
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service),
                              "", self._deadline(), retry=False)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    @property
    def calls_retried(self) -> int:
        """Unary calls made again after a refusal or a lost connection, so far."""
        with self._lock:
            return self._calls_retried

    @property
    def streams_reopened(self) -> int:
        """Streams opened again after a refusal or a cut, so far (each reopen counts)."""
        with self._lock:
            return self._streams_reopened

    @property
    def reregistrations(self) -> int:
        """Identities registered again after a NOT_FOUND, so far."""
        with self._lock:
            return self._reregistrations

    # Details ------------------------------------------------------------------------------

    def _deadline(self) -> Optional[float]:
        return None if self._timeout_s is None else time.monotonic() + self._timeout_s

    def _metadata(self, identity_id: str):
        identity = ((IDENTITY_METADATA_KEY, identity_id),) if identity_id else ()
        return (identity + self._auth) or None

    def _call(self, method, request, identity_id: str, deadline: Optional[float],
              retry: bool = True):
        """One unary call, made again (each try a new call) while it is refused or
        cut because its server went away, at most _MAX_ATTEMPTS times and never
        past the deadline."""
        attempts = _MAX_ATTEMPTS if retry else 1
        for attempt in range(1, attempts + 1):
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                return method(request, timeout=timeout, metadata=self._metadata(identity_id),
                              wait_for_ready=self._wait_for_ready)
            except grpc.RpcError as error:
                code, message = error.code(), error.details() or ""
            if attempt == attempts or not _retryable(code, message):
                break
            wait = _backoff_s(attempt)
            if deadline is not None and time.monotonic() + wait >= deadline:
                break
            with self._lock:
                self._calls_retried += 1
            time.sleep(wait)
        raise FsrstError(code, message)

    def _identity(self, identity_id: str) -> _Identity:
        with self._lock:
            return self._identities.setdefault(identity_id, _Identity())

    def _epoch(self, identity_id: str) -> Optional[int]:
        with self._lock:
            identity = self._identities.get(identity_id)
            return None if identity is None else identity.epoch

    def _register(self, identity_id, references, deadline):
        request = fsrst_pb2.RegisterReferencesRequest(identity_id=identity_id,
                                                      references=references)
        return self._call(self._stub.RegisterReferences, request, identity_id, deadline)

    def _delete(self, identity_id):
        self._call(self._stub.DeleteReferences,
                   fsrst_pb2.DeleteReferencesRequest(identity_id=identity_id), identity_id,
                   self._deadline())

    def _reregister(self, identity_id: str, seen_epoch: Optional[int],
                    deadline: Optional[float]) -> bool:
        """After a NOT_FOUND for a call made at seen_epoch: registers the kept
        references again unless someone did since. False if there are none."""
        with self._lock:
            identity = self._identities.get(identity_id)
        if identity is None:
            return False
        with identity.lock:
            if identity.references is None:
                return False
            if identity.epoch == seen_epoch:
                self._register(identity_id, identity.references, deadline)
                identity.epoch += 1
                with self._lock:
                    self._reregistrations += 1
        return True

    def _enhance_request(self, identity_id, frame, output, encoding, jpeg_quality,
                         frame_timeout_ms, sequence_number=0):
        if output not in _ENCODINGS:
            raise ValueError(f"output must be 'rgb8' or 'jpeg', not {output!r}")
        return fsrst_pb2.EnhanceRequest(
            identity_id=identity_id, frame=to_proto(frame, encoding or self._encoding),
            output_encoding=_ENCODINGS[output], sequence_number=sequence_number,
            jpeg_quality=jpeg_quality, timeout_ms=frame_timeout_ms)


def _result(response: "fsrst_pb2.EnhanceResponse", with_weights: bool):
    image = from_proto(response.image)
    return Enhanced(image, tuple(response.reference_weights)) if with_weights else image


class _FrameStream:
    """One enhance_stream() call. gRPC's request thread of each call opened runs
    requests(); the caller's thread runs run(). Shared state is guarded by `cond`;
    `frames` is only advanced under `pull_lock`."""

    def __init__(self, client: FsrstClient, identity_id, frames, output, encoding, jpeg_quality,
                 frame_timeout_ms, max_in_flight, with_weights=False):
        self.client = client
        self.with_weights = with_weights
        self.identity_id = identity_id
        self.frames = frames
        self.make_request = lambda frame, seq: client._enhance_request(
            identity_id, frame, output, encoding, jpeg_quality, frame_timeout_ms, seq)
        self.max_in_flight = max_in_flight
        self.cond = threading.Condition()
        self.pull_lock = threading.Lock()  # held while taking a frame from `frames`
        self.pulled = 0  # frames taken from `frames`
        self.delivered = 0  # results handed to the caller
        self.unanswered = {}  # seq -> request sent and not finally answered
        self.sent_epoch = {}  # seq -> identity epoch when (last) sent
        self.resend = collections.deque()  # seqs to send again
        self.resent = set()
        self.source_done = False
        self.source_error = None
        self.closed = False
        self.generation = 0  # bumped when the call is lost and opened again

    def requests(self, generation):
        """The requests of the call opened at `generation`; ends when the call is
        replaced, the stream closes, or every frame has its final answer."""
        while True:
            # One puller at a time: after a reopen, the lost call's request thread
            # may still be inside next(frames) when the new call's starts.
            with self.pull_lock:
                request = self._next_request(generation)
            if request is None:
                return
            yield request  # outside the locks: gRPC may never resume a cancelled call's

    def _next_request(self, generation):
        while True:
            with self.cond:
                while True:
                    if self.closed or self.generation != generation:
                        return None
                    if self.resend:
                        seq = self.resend.popleft()
                        # the registration this send can rely on
                        self.sent_epoch[seq] = self.client._epoch(self.identity_id)
                        return self.unanswered[seq]
                    if not self.source_done and self.pulled - self.delivered < self.max_in_flight:
                        seq = self.pulled
                        break
                    if self.source_done and not self.unanswered:
                        return None  # half-close: every frame has its final answer
                    self.cond.wait()
            try:
                request = self.make_request(next(self.frames), seq)
            except StopIteration:
                with self.cond:
                    self.source_done = True
                    self.cond.notify_all()
                continue
            except Exception as error:  # surfaces in the caller's thread
                with self.cond:
                    self.source_error = error
                    self.source_done = True
                    self.closed = True
                    self.cond.notify_all()
                return None
            with self.cond:
                self.pulled = seq + 1
                self.unanswered[seq] = request
                self.sent_epoch[seq] = self.client._epoch(self.identity_id)
                if self.generation != generation:  # the call this was for is gone
                    self.resend.append(seq)
                    self.cond.notify_all()
                    return None
            return request

    def run(self, timeout_s, return_errors):
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        ready = {}
        reopens = 0  # in a row, with no frame answered since
        try:
            while True:
                with self.cond:
                    generation = self.generation
                call = self.client._stub.EnhanceStream(
                    self.requests(generation),
                    timeout=None if deadline is None else max(deadline - time.monotonic(), 0.0),
                    metadata=self.client._metadata(self.identity_id),
                    wait_for_ready=self.client._wait_for_ready)
                lost = None  # (code, message, sequence number or None): reopen
                try:
                    for response in call:
                        seq = response.sequence_number
                        with self.cond:
                            known = seq in self.unanswered
                            epoch = self.sent_epoch.get(seq)
                        if not known:
                            raise FsrstError(grpc.StatusCode.INTERNAL,
                                             "the server answered an unknown sequence number", seq)
                        if response.HasField("error"):
                            code = _CODES.get(response.error.code, grpc.StatusCode.UNKNOWN)
                            if _retryable(code, response.error.message):
                                # The server refuses frames (it drains): the ones after
                                # this are refused too, and every earlier one is answered.
                                lost = (code, response.error.message, seq)
                                break
                            # A frame NOT_FOUND again after its re-registration is
                            # answered so once the reopens are spent.
                            if (code == grpc.StatusCode.NOT_FOUND and self.identity_id
                                    and (seq not in self.resent or reopens < _STREAM_REOPENS)
                                    and self.client._reregister(self.identity_id, epoch,
                                                                self.client._deadline())):
                                if seq in self.resent:
                                    # Registered, sent again, still unknown here: the
                                    # registration reached another replica (a proxy's
                                    # view of live replicas changed since this call
                                    # opened). A new call goes where the identity is.
                                    lost = (code, response.error.message, seq)
                                    break
                                with self.cond:
                                    self.resent.add(seq)
                                    self.resend.append(seq)
                                    self.cond.notify_all()
                                continue
                            result = FsrstError(code, response.error.message, seq)
                        else:
                            result = _result(response, self.with_weights)
                        reopens = 0
                        with self.cond:
                            del self.unanswered[seq]
                            self.cond.notify_all()
                        ready[seq] = result
                        while self.delivered in ready:
                            result = ready.pop(self.delivered)
                            with self.cond:
                                self.delivered += 1
                                self.cond.notify_all()
                            if isinstance(result, FsrstError) and not return_errors:
                                raise result
                            yield result
                except grpc.RpcError as error:
                    if self.source_error is not None:
                        raise self.source_error
                    lost = (error.code(), error.details() or "", None)
                    if not _retryable(*lost[:2]):
                        raise FsrstError(*lost) from None
                finally:
                    call.cancel()
                if lost is None:
                    break  # the server ended the call: every frame is answered
                reopens += 1
                wait = _backoff_s(reopens)
                if (reopens > _STREAM_REOPENS
                        or (deadline is not None and time.monotonic() + wait >= deadline)):
                    raise FsrstError(*lost)
                with self.cond:
                    self.generation += 1
                    self.resend = collections.deque(sorted(self.unanswered))
                    self.resent.clear()  # another server: NOT_FOUND may come once more
                    self.cond.notify_all()
                with self.client._lock:
                    self.client._streams_reopened += 1
                time.sleep(wait)
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()
        if self.source_error is not None:
            raise self.source_error
        if ready or self.unanswered:
            raise FsrstError(grpc.StatusCode.INTERNAL, "the stream ended before every frame "
                             "was answered", self.delivered)
