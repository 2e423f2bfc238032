"""FsrstClient: the Python client of fsrst_server, with transparent re-registration.

The client keeps every identity's references. When the server answers
NOT_FOUND for an identity this client registered (restart, eviction, expiry,
another replica), it registers them again and retries the frame once, so the
server's reference cache is invisible to callers. Every identity-bound call
carries the metadata x-fsrst-identity for identity-affine load balancing.

Thread-safe: one client may be shared by threads.
"""

import io
import threading
from typing import Iterable, Iterator, List, Optional, Union

import grpc
import numpy as np
from PIL import Image

from fsrst_client._stubs import fsrst_pb2, fsrst_pb2_grpc, health_pb2, health_pb2_grpc

IDENTITY_METADATA_KEY = "x-fsrst-identity"
ImageLike = Union[np.ndarray, Image.Image, str]


class FsrstError(Exception):
    """A call failed; `code` is the grpc.StatusCode, the message the server's."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


def to_array(image: ImageLike) -> np.ndarray:
    """An HxWx3 uint8 RGB array from an array, a PIL image or a file path."""
    if isinstance(image, str):
        image = Image.open(image)
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.ascontiguousarray(image, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {array.shape}")
    return array


def to_proto(image: ImageLike, encoding: str = "rgb8") -> "fsrst_pb2.Image":
    array = to_array(image)
    h, w, _ = array.shape
    if encoding == "jpeg":
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "JPEG", quality=95)
        return fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_JPEG, data=buffer.getvalue())
    return fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_RGB8, data=array.tobytes(), width=w,
                           height=h)


def from_proto(image: "fsrst_pb2.Image") -> np.ndarray:
    if image.encoding == fsrst_pb2.ENCODING_JPEG:
        return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"))
    return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 3).copy()


class FsrstClient:
    """A client of one fsrst_server (or a load-balanced set of replicas).

    Args:
        target: "host:port".
        timeout_s: deadline of each call (a stream: of the whole stream).
        channel: an existing channel instead of `target`.
    """

    def __init__(self, target: str = "localhost:50051", timeout_s: float = 30.0,
                 channel: Optional[grpc.Channel] = None):
        self._channel = channel or grpc.insecure_channel(
            target, options=[("grpc.max_send_message_length", 64 << 20),
                             ("grpc.max_receive_message_length", 64 << 20)])
        self._stub = fsrst_pb2_grpc.FaceSuperResolutionStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._references = {}  # identity -> [fsrst_pb2.Image]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _metadata(identity_id: str):
        return [(IDENTITY_METADATA_KEY, identity_id)] if identity_id else None

    def _call(self, method, request, identity_id: str = ""):
        try:
            return method(request, timeout=self._timeout_s,
                          metadata=self._metadata(identity_id))
        except grpc.RpcError as error:
            raise FsrstError(error.code(), error.details()) from None

    def register_references(self, identity_id: str, images: List[ImageLike],
                            encoding: str = "rgb8"):
        """Registers (and keeps) the identity's references; returns the server's answer."""
        references = [to_proto(image, encoding) for image in images]
        response = self._register(identity_id, references)
        with self._lock:
            self._references[identity_id] = references
        return response

    def _register(self, identity_id, references):
        request = fsrst_pb2.RegisterReferencesRequest(identity_id=identity_id,
                                                      references=references)
        return self._call(self._stub.RegisterReferences, request, identity_id)

    def _reregister(self, identity_id: str) -> bool:
        with self._lock:
            references = self._references.get(identity_id)
        if not references:
            return False
        self._register(identity_id, references)
        return True

    def _request(self, identity_id, frame, output, sequence=0):
        encoding = {"rgb8": fsrst_pb2.ENCODING_RGB8, "jpeg": fsrst_pb2.ENCODING_JPEG}[output]
        return fsrst_pb2.EnhanceRequest(identity_id=identity_id, frame=to_proto(frame),
                                        output_encoding=encoding, sequence_number=sequence)

    def enhance(self, identity_id: str, frame: ImageLike, output: str = "rgb8") -> np.ndarray:
        """Enhances one frame (identity "" = no references); HxWx3 uint8."""
        request = self._request(identity_id, frame, output)
        try:
            return from_proto(self._call(self._stub.Enhance, request, identity_id).image)
        except FsrstError as error:
            if error.code != grpc.StatusCode.NOT_FOUND or not self._reregister(identity_id):
                raise
        return from_proto(self._call(self._stub.Enhance, request, identity_id).image)

    def enhance_stream(self, identity_id: str, frames: Iterable[ImageLike],
                       output: str = "rgb8") -> Iterator[np.ndarray]:
        """Streams frames of one identity on one EnhanceStream call; yields the answers
        in frame order once the call ends. Frames answered NOT_FOUND are re-sent once,
        after re-registration, on a second call; other frame errors raise."""
        requests = [self._request(identity_id, f, output, i) for i, f in enumerate(frames)]
        answers = {}
        pending = list(range(len(requests)))
        for attempt in range(2):
            retry = []
            try:
                responses = self._stub.EnhanceStream(
                    iter([requests[i] for i in pending]), timeout=self._timeout_s,
                    metadata=self._metadata(identity_id))
                for response in responses:
                    seq = response.sequence_number
                    if response.HasField("error"):
                        code = grpc.StatusCode.NOT_FOUND if response.error.code == 5 else None
                        if code and attempt == 0:
                            retry.append(seq)
                            continue
                        raise FsrstError(next((c for c in grpc.StatusCode
                                               if c.value[0] == response.error.code),
                                              grpc.StatusCode.UNKNOWN), response.error.message)
                    answers[seq] = from_proto(response.image)
            except grpc.RpcError as error:
                raise FsrstError(error.code(), error.details()) from None
            if not retry or not self._reregister(identity_id):
                break
            pending = retry
        for i in range(len(requests)):
            if i not in answers:
                raise FsrstError(grpc.StatusCode.NOT_FOUND,
                                 f"frame {i}: identity {identity_id!r} is not registered")
            yield answers[i]

    def delete_references(self, identity_id: str) -> None:
        """Forgets the identity here and on the server."""
        with self._lock:
            had = self._references.pop(identity_id, None) is not None
        try:
            self._call(self._stub.DeleteReferences,
                       fsrst_pb2.DeleteReferencesRequest(identity_id=identity_id), identity_id)
        except FsrstError as error:
            if not (had and error.code == grpc.StatusCode.NOT_FOUND):
                raise

    def server_info(self):
        return self._call(self._stub.GetServerInfo, fsrst_pb2.GetServerInfoRequest())

    def health(self, service: str = "") -> str:
        """"SERVING", "NOT_SERVING", ..."""
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
