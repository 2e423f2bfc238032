"""Settings a caller or an operator chooses, seen through a running server: the JPEG quality
of answers (request field and --default_jpeg_quality) and the cache budget (--cache_bytes)."""

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from fsrst.export import read_metadata
from server_process import read_metric, rgb8, small_model, start_small_server
import fsrst_pb2

RNG = np.random.default_rng(23)
DEFAULT_QUALITY = 20


def feature_bytes_per_reference() -> int:
    shape = read_metadata(small_model())["feature_shape"]
    return int(np.prod(shape)) * 4  # float32


@pytest.fixture(scope="module")
def server():
    # Room for two identities of three references and a half: the third evicts one.
    budget = int(2.5 * 3 * feature_bytes_per_reference())
    process = start_small_server("--model_instances=1", f"--default_jpeg_quality={DEFAULT_QUALITY}",
                                 f"--cache_bytes={budget}")
    yield process
    assert process.stop() == 0


def register(stub, identity):
    return stub.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
        identity_id=identity, references=[rgb8(128, RNG) for _ in range(3)]), timeout=60)


def jpeg_answer(stub, frame, quality):
    answer = stub.Enhance(fsrst_pb2.EnhanceRequest(
        identity_id="q", frame=frame, output_encoding=fsrst_pb2.ENCODING_JPEG,
        jpeg_quality=quality), timeout=60)
    assert answer.image.encoding == fsrst_pb2.ENCODING_JPEG
    assert Image.open(io.BytesIO(answer.image.data)).size == (128, 128)
    return answer.image.data


def test_jpeg_quality_zero_is_the_servers_default_and_a_value_is_used(stub):
    register(stub, "q")
    frame = rgb8(32, RNG)
    default = jpeg_answer(stub, frame, 0)
    assert default == jpeg_answer(stub, frame, DEFAULT_QUALITY)  # the same bytes
    high = jpeg_answer(stub, frame, 95)
    assert high != default and len(high) > len(default)
    assert jpeg_answer(stub, frame, 100) != high


def test_jpeg_quality_above_100_names_the_field_and_the_range(stub):
    with pytest.raises(grpc.RpcError) as error:
        jpeg_answer(stub, rgb8(32, RNG), 101)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "jpeg_quality: expected 0 (default) to 100, got 101"


def test_the_cache_budget_evicts_the_least_recently_used_identity(server, stub):
    if read_metric(server, "fsrst_reference_cache_entries"):  # the JPEG tests' identity
        stub.DeleteReferences(fsrst_pb2.DeleteReferencesRequest(identity_id="q"), timeout=10)
    assert read_metric(server, "fsrst_reference_cache_entries") == 0
    evictions = read_metric(server, "fsrst_reference_cache_evictions_total")
    one = register(stub, "a").feature_bytes
    assert one == 3 * feature_bytes_per_reference()
    register(stub, "b")
    stub.Enhance(fsrst_pb2.EnhanceRequest(identity_id="a", frame=rgb8(32, RNG)),
                 timeout=60)  # a is used
    register(stub, "c")  # over the budget: b, the least recently used, goes
    assert read_metric(server, "fsrst_reference_cache_evictions_total") == evictions + 1
    assert read_metric(server, "fsrst_reference_cache_entries") == 2
    assert read_metric(server, "fsrst_reference_cache_bytes") == 2 * one
    with pytest.raises(grpc.RpcError) as error:
        stub.Enhance(fsrst_pb2.EnhanceRequest(identity_id="b", frame=rgb8(32, RNG)), timeout=60)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    for kept in ("a", "c"):
        stub.Enhance(fsrst_pb2.EnhanceRequest(identity_id=kept, frame=rgb8(32, RNG)), timeout=60)
