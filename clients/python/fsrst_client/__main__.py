"""fsrst_client: the Python command line of fsrst_server.

    clients/python/fsrst-client health   --server localhost:50051   # exit 0 only when SERVING
    clients/python/fsrst-client info
    clients/python/fsrst-client register --identity alice --ref a.jpg --ref b.jpg --ref c.jpg
    clients/python/fsrst-client enhance  --frame lr.jpg --out out.png [--identity alice]
                                         [--ref a.jpg ...] [--side_by_side sbs.png]
                                         [--truth hr.jpg]
    clients/python/fsrst-client stream   --identity alice --frames_dir frames/ [--out_dir out/]
                                         [--ref a.jpg ...]
    clients/python/fsrst-client identity --identity alice   # what the server holds and served
    clients/python/fsrst-client delete   --identity alice
    clients/python/fsrst-client describe   # the services and methods, without grpcurl
    clients/python/fsrst-client call GetServerInfo [--data '{"json": "request"}']

(or `PYTHONPATH=clients/python /usr/bin/python3 -m fsrst_client ...`).

register keeps the references on the server under --identity until delete (or
eviction). enhance with --ref registers them first (under --identity, or a fresh
id deleted again afterwards); without --ref it uses --identity's registration, or
none. --side_by_side also writes LR (nearest) | bicubic | enhanced | references,
with the high-resolution truth after enhanced when --truth names it.
stream sends every image in --frames_dir in sorted name order on one stream,
prints one line per frame (its latency, from sending to the answer) and a summary
(frames, errors, p50/p99 latency, fps) and, when the model reports them, each
reference's mean weight over the frames; --out_dir keeps the answers under the
frames' names. A frame the server refuses is counted and the stream goes on,
except NOT_FOUND (the identity is not registered), which stops it at once.
describe and call stand in for grpcurl's `list`/`describe` and `-d`: call makes
any unary method with a JSON request (the proto's field names) and prints the
answer as JSON.
Exit status: 0 on success, 1 when a call, a frame or a file fails, 2 on bad usage.
"""

import argparse
import os
import sys
import time
import uuid

import grpc
import numpy as np
from PIL import Image, ImageDraw

from fsrst_client.client import FsrstClient, FsrstError, to_array

LABEL_HEIGHT = 16


def centre_square(array: np.ndarray) -> np.ndarray:
    height, width, _ = array.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return array[top:top + side, left:left + side]


def side_by_side(lr: np.ndarray, enhanced: np.ndarray, references, path: str,
                 truth: np.ndarray = None) -> None:
    """Writes LR (nearest) | bicubic | enhanced | [truth] | references (centre
    square), each as large as the enhanced face, with a label strip above."""
    size = enhanced.shape[0]
    lr_image = Image.fromarray(lr)
    tiles = [("LR (nearest)", lr_image.resize((size, size), Image.NEAREST)),
             ("bicubic", lr_image.resize((size, size), Image.BICUBIC)),
             ("enhanced", Image.fromarray(enhanced))]
    if truth is not None:
        tiles.append(("truth", Image.fromarray(centre_square(truth)).resize((size, size),
                                                                             Image.BICUBIC)))
    tiles += [(f"reference {i}", Image.fromarray(centre_square(r)).resize((size, size),
                                                                       Image.BICUBIC))
              for i, r in enumerate(references)]
    canvas = Image.new("RGB", (size * len(tiles), size + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, tile) in enumerate(tiles):
        canvas.paste(tile, (i * size, LABEL_HEIGHT))
        draw.text((i * size + 4, 2), label, fill="black")
    canvas.save(path)


def enhance(client: FsrstClient, args) -> None:
    identity = ""
    if args.ref:
        identity = args.identity or f"cli-{uuid.uuid4().hex[:12]}"
        client.register_references(identity, [_checked(p) for p in args.ref])
    try:
        lr = _read(args.frame)
        enhanced = client.enhance(identity, lr, output=args.output)
    finally:
        if args.ref and not args.identity:
            try:
                client.delete_references(identity)
            except FsrstError:
                pass  # the answer (or the first error) matters more than the clean-up
    Image.fromarray(enhanced).save(args.out)
    print(f"wrote {args.out} ({enhanced.shape[1]}x{enhanced.shape[0]})")
    if args.side_by_side:
        side_by_side(lr, enhanced, [_read(r) for r in args.ref], args.side_by_side,
                     _read(args.truth) if args.truth else None)
        print(f"wrote {args.side_by_side}")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


class LocalFileError(Exception):
    """A file on this machine could not be read or written (not a server answer)."""


def register(client: FsrstClient, args) -> None:
    response = client.register_references(args.identity, [_checked(p) for p in args.ref])
    print(f"registered {response.reference_count} reference(s) of {args.identity} "
          f"({response.feature_bytes} feature bytes)")


def delete(client: FsrstClient, args) -> None:
    client.delete_references(args.identity)
    print(f"deleted the references of {args.identity}")


def _read(path: str) -> np.ndarray:
    try:
        return to_array(path)
    except OSError as error:  # PIL's UnidentifiedImageError is one too, without strerror
        raise LocalFileError(f"cannot read {path}: {error.strerror or error}") from None


def _checked(path: str) -> str:
    """`path`, once PIL can read it: the client sends it as it is (--encoding jpeg: a
    JPEG file's own bytes) or decoded, and its errors are about a local file."""
    _read(path)
    return path


def list_frames(folder: str):
    """The image files of `folder`, sorted by name."""
    try:
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES))
    except OSError as error:
        raise LocalFileError(f"cannot list {folder}: {error.strerror}") from None
    if not names:
        raise LocalFileError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return [os.path.join(folder, n) for n in names]


def percentile_ms(latencies_s, q: float) -> float:
    """The q-th percentile (nearest rank) of latencies_s, in ms."""
    ordered = sorted(latencies_s)
    rank = max(1, int(np.ceil(q / 100.0 * len(ordered))))
    return ordered[rank - 1] * 1000.0


def stream(client: FsrstClient, args) -> int:
    paths = list_frames(args.frames_dir)
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
    if args.ref:
        register(client, args)  # kept by this client: a lost registration is redone
    sent_at = {}

    def frames():
        for i, path in enumerate(paths):
            frame = _checked(path)
            sent_at[i] = time.monotonic()
            yield frame

    latencies, errors, answered = [], 0, 0
    weight_sums, weighted = None, 0
    started = time.monotonic()
    results = client.enhance_stream(args.identity, frames(), output=args.output,
                                    max_in_flight=args.window, timeout_s=None,
                                    return_errors=True, with_weights=True)
    try:
        for i, result in enumerate(results):
            latency = time.monotonic() - sent_at.pop(i)
            name = os.path.basename(paths[i])
            answered += 1
            if isinstance(result, FsrstError):
                errors += 1
                print(f"{name}: {result.code.name}: {result.message}")
                if result.code == grpc.StatusCode.NOT_FOUND:
                    print(f"stopped: {args.identity} is not registered; register it first "
                          f"(register --identity {args.identity} --ref ...), or pass --ref")
                    break
                continue
            latencies.append(latency)
            result, weights = result
            if weights:
                weight_sums = [0.0] * len(weights) if weight_sums is None else weight_sums
                if len(weights) == len(weight_sums):  # a re-registration may change the count
                    weight_sums = [s + w for s, w in zip(weight_sums, weights)]
                    weighted += 1
            if args.out_dir:
                out = os.path.join(args.out_dir, name)
                try:
                    Image.fromarray(result).save(out)
                except OSError as error:
                    raise LocalFileError(f"cannot write {out}: {error}") from None
            print(f"{name}: {latency * 1000:.1f} ms")
    finally:
        results.close()  # leaving early cancels the call
    elapsed = time.monotonic() - started
    summary = f"frames: {len(paths)}, enhanced: {len(latencies)}, errors: {errors}"
    if answered < len(paths):
        summary += f", not sent or not answered: {len(paths) - answered}"
    if latencies:
        summary += (f", latency p50: {percentile_ms(latencies, 50):.1f} ms, "
                    f"p99: {percentile_ms(latencies, 99):.1f} ms, "
                    f"fps: {len(latencies) / elapsed:.1f}")
    print(summary)
    if weighted:
        means = [s / weighted for s in weight_sums]
        for i, mean in enumerate(means):
            print(f"reference {i}: mean weight {mean:.4f}")
        print(f"reference share: {sum(means):.4f} (1 - share: the model's own)")
    return 0 if errors == 0 and len(latencies) == len(paths) else 1


def show_identity(client: FsrstClient, args) -> None:
    """Prints GetIdentity: what the server holds for --identity and has served with it."""
    info = client.get_identity(args.identity)

    def when(ms: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"

    print(f"identity_id: {info.identity_id}")
    print(f"reference_count: {info.reference_count}")
    print(f"feature_bytes: {info.feature_bytes}")
    print(f"registered: {when(info.registered_time_unix_ms)}")
    print(f"last_used: {when(info.last_used_time_unix_ms)}")
    print(f"frames_served: {info.frames_served}")
    if info.mean_reference_weights:
        for i, mean in enumerate(info.mean_reference_weights):
            print(f"reference {i}: mean weight {mean:.4f}")
    else:
        print("mean weights: none yet (no frame served, or the model reports none)")


def describe() -> None:
    """The services this client speaks and their methods, from the proto descriptors."""
    from fsrst_client._stubs import fsrst_pb2, health_pb2
    for module in (fsrst_pb2, health_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            print(f"service {service.full_name}  ({module.DESCRIPTOR.name})")
            for method in service.methods:
                stream_in = "stream " if method.client_streaming else ""
                stream_out = "stream " if method.server_streaming else ""
                print(f"  rpc {method.name}({stream_in}{method.input_type.name}) returns "
                      f"({stream_out}{method.output_type.name})")
                fields = ", ".join(_field(f) for f in method.input_type.fields)
                print(f"      request: {fields or '(no fields)'}")
    print("Call them with this CLI: register, enhance, stream, delete, info, health, or any "
          "unary one as `call METHOD --data JSON`; from Python with FsrstClient. The server "
          "also answers grpc.reflection, for grpcurl where it is installed.")


def find_method(name: str):
    """(service, method) descriptors of `name`: "GetServerInfo", "Health/Check" or
    "grpc.health.v1.Health/Check"; raises ValueError naming the choices."""
    from fsrst_client._stubs import fsrst_pb2, health_pb2
    methods = []
    for module in (fsrst_pb2, health_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                methods.append((module, service, method))
                if name in (method.name, f"{service.name}/{method.name}",
                            f"{service.full_name}/{method.name}"):
                    return module, service, method
    raise ValueError(f"call: expected one of {', '.join(m.name for _, _, m in methods)}, "
                     f"got {name!r}")


def call(client: FsrstClient, args) -> None:
    """One unary call from JSON to JSON, the way grpcurl -d does."""
    from google.protobuf import json_format
    module, service, method = find_method(args.method)
    if method.client_streaming or method.server_streaming:
        raise ValueError(f"call: {method.name} streams; use the stream command")
    request_class = getattr(module, method.input_type.name)
    response_class = getattr(module, method.output_type.name)
    try:
        request = json_format.Parse(args.data, request_class())
    except json_format.ParseError as error:
        raise ValueError(f"--data: expected a JSON {method.input_type.name}: {error}") from None
    rpc = client._channel.unary_unary(f"/{service.full_name}/{method.name}",
                                      request_serializer=request_class.SerializeToString,
                                      response_deserializer=response_class.FromString)
    try:
        response = rpc(request, timeout=args.timeout_s, metadata=client._auth)
    except grpc.RpcError as error:
        raise FsrstError(error.code(), error.details() or "") from None
    print(json_format.MessageToJson(response, including_default_value_fields=True,
                                    preserving_proto_field_name=True))


_TYPE_NAMES = {1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 8: "bool",
               9: "string", 12: "bytes", 13: "uint32"}


def _field(field) -> str:
    if field.message_type is not None:
        type_name = field.message_type.name
    elif field.enum_type is not None:
        type_name = field.enum_type.name
    else:
        type_name = _TYPE_NAMES.get(field.type, f"type{field.type}")
    repeated = "repeated " if field.label == field.LABEL_REPEATED else ""
    return f"{field.name} {repeated}{type_name}"


def api_key_hint(key_given: bool) -> str:
    """What to do about UNAUTHENTICATED with this CLI."""
    if key_given:
        return ("the server refused the API key sent (from --api_key or $FSRST_API_KEY); "
                "check it with whoever runs the server")
    return ("this server requires an API key: pass --api_key KEY, or set FSRST_API_KEY=KEY "
            "(keeps it out of ps); other clients send the metadata `authorization: Bearer KEY`")


COMMANDS = ["register", "enhance", "stream", "identity", "delete", "info", "health", "describe",
            "call"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fsrst-client",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("method", nargs="?",
                        help="call: the method, e.g. GetServerInfo or Health/Check")
    parser.add_argument("--server", default=os.environ.get("FSRST_SERVER", "localhost:50051"),
                        help="host:port (default: $FSRST_SERVER, else localhost:50051)")
    parser.add_argument("--timeout_s", type=float, default=30.0,
                        help="deadline of each unary call (a stream has none)")
    parser.add_argument("--identity", help="the person's id: 1 to 128 of [A-Za-z0-9._:@-]")
    parser.add_argument("--ref", action="append", default=[],
                        help="register/enhance/stream: a reference photo (repeat the flag)")
    parser.add_argument("--frame", help="enhance: the low-resolution face (any image file)")
    parser.add_argument("--out", help="enhance: the enhanced face (PNG, or any PIL format)")
    parser.add_argument("--side_by_side", help="enhance: also write LR|bicubic|enhanced|refs")
    parser.add_argument("--truth", help="enhance: the high-resolution frame, for --side_by_side")
    parser.add_argument("--frames_dir", help="stream: the folder of frames, sent in name order")
    parser.add_argument("--out_dir", help="stream: write the answers here, named as the frames")
    parser.add_argument("--data", default="{}",
                        help="call: the request as JSON, e.g. '{\"identity_id\": \"alice\"}'")
    parser.add_argument("--window", type=int, default=8,
                        help="stream: frames sent ahead of the answers (at least 1)")
    parser.add_argument("--encoding", choices=["rgb8", "jpeg"], default="rgb8",
                        help="how images are sent (jpeg: JPEG files as they are)")
    parser.add_argument("--output", choices=["rgb8", "jpeg"], default="rgb8",
                        help="how the server answers")
    parser.add_argument("--api_key", default=os.environ.get("FSRST_API_KEY"),
                        help="API key (default: $FSRST_API_KEY, which keeps it out of ps)")
    parser.add_argument("--tls_ca", help="PEM CA of the server's certificate: use TLS")
    parser.add_argument("--tls_cert", help="PEM client certificate (servers that require mTLS)")
    parser.add_argument("--tls_key", help="PEM private key of --tls_cert")
    args = parser.parse_args(argv)
    if args.command == "enhance" and not (args.frame and args.out):
        parser.error("enhance needs --frame and --out")
    if args.truth and not args.side_by_side:
        parser.error("--truth goes with --side_by_side")
    if args.command in ("register", "stream", "identity", "delete") and not args.identity:
        parser.error(f"{args.command} needs --identity")
    if args.command == "register" and not args.ref:
        parser.error("register needs at least one --ref")
    if args.command == "stream" and not args.frames_dir:
        parser.error("stream needs --frames_dir")
    if args.command == "call" and not args.method:
        parser.error("call needs a method, e.g. call GetServerInfo (see describe)")
    if args.method and args.command != "call":
        parser.error(f"unexpected argument {args.method!r} after {args.command}")
    if args.window < 1:
        parser.error(f"--window: expected at least 1, got {args.window}")
    if args.command == "describe":
        describe()
        return 0
    try:
        with FsrstClient(args.server, timeout_s=args.timeout_s, encoding=args.encoding,
                         api_key=args.api_key, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                         tls_key=args.tls_key) as client:
            if args.command == "health":
                status = client.health()
                print(status)
                return 0 if status == "SERVING" else 2
            if args.command == "info":
                info = client.server_info()
                for field in info.DESCRIPTOR.fields:  # defaults too: model_trained: False
                    print(f"{field.name}: {getattr(info, field.name)}")
                return 0
            if args.command == "call":
                call(client, args)
            elif args.command == "register":
                register(client, args)
            elif args.command == "delete":
                delete(client, args)
            elif args.command == "identity":
                show_identity(client, args)
            elif args.command == "stream":
                return stream(client, args)
            else:
                enhance(client, args)
    except FsrstError as error:
        print(f"fsrst_client: {error}", file=sys.stderr)
        if error.code == grpc.StatusCode.UNAUTHENTICATED:
            print(f"fsrst_client: {api_key_hint(bool(args.api_key))}", file=sys.stderr)
        return 1
    except LocalFileError as error:
        print(f"fsrst_client: error: {error}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"fsrst_client: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
