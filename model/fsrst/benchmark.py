"""Raw throughput of an exported FSRST file: the limit the server is measured against.

    /usr/bin/python3 -m fsrst.benchmark weights/fsrst_x4.pt weights/fsrst_x4_small.pt \
        [--threads 2] [--batch_sizes 1 8] [--seconds 5]

For each file and batch size, two modes: "cached" runs forward on reference
features encoded once; "per_frame" encodes the frame's 3 references in every
call, as a server without a cache must. Prints a Markdown table.
"""

import argparse
import time

import torch


def frames_per_second(fn, batch_size: int, seconds: float) -> float:
    fn()  # first call: profiling executor
    fn()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return count * batch_size / (time.perf_counter() - start)


def measure(path: str, batch_size: int, seconds: float, num_references: int = 3):
    module = torch.jit.load(path, map_location="cpu")
    lr = torch.rand(batch_size, 3, 32, 32)
    refs = torch.rand(batch_size * num_references, 1, 128, 128)
    mask = torch.ones(batch_size, num_references, dtype=torch.bool)
    with torch.inference_mode():
        feats = module.encode_references(refs).reshape(batch_size, num_references, 3, 32, 32)
        cached = frames_per_second(lambda: module(lr, feats, mask), batch_size, seconds)
        per_frame = frames_per_second(
            lambda: module(lr, module.encode_references(refs).reshape(
                batch_size, num_references, 3, 32, 32), mask), batch_size, seconds)
    return cached, per_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, 3 references per frame\n")
    print("| file | batch | cached refs (frames/s) | refs per frame (frames/s) | ratio |")
    print("|---|---|---|---|---|")
    for path in args.files:
        for batch_size in args.batch_sizes:
            cached, per_frame = measure(path, batch_size, args.seconds)
            print(f"| {path} | {batch_size} | {cached:.1f} | {per_frame:.1f} | "
                  f"{cached / per_frame:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
