"""Raw throughput of an exported FSRST file: the limit the server is measured against.

    /usr/bin/python3 -m fsrst.benchmark weights/fsrst_x4.pt weights/fsrst_x4_small.pt \
        [--threads 2] [--batch_sizes 1 8] [--seconds 5]
    /usr/bin/python3 -m fsrst.benchmark weights/fsrst_x4_small.pt --weights_cost [--rounds 7]

For each file and batch size, two modes: "cached" runs forward on reference
features encoded once; "per_frame" encodes the frame's 3 references in every
call, as a server without a cache must. Prints a Markdown table. --weights_cost
instead times forward and forward_with_weights in alternating rounds (batch 8,
cached references) and prints each round's ratio and their median.
"""

import statistics

import argparse
import time

import torch

from fsrst.evaluate import reference_channels_of


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
    refs = torch.rand(batch_size * num_references, reference_channels_of(module), 128, 128)
    mask = torch.ones(batch_size, num_references, dtype=torch.bool)
    with torch.inference_mode():
        feats = module.encode_references(refs)
        shape = (batch_size, num_references, *feats.shape[1:])
        feats = feats.reshape(shape)
        cached = frames_per_second(lambda: module(lr, feats, mask), batch_size, seconds)
        per_frame = frames_per_second(
            lambda: module(lr, module.encode_references(refs).reshape(shape), mask), batch_size,
            seconds)
    return cached, per_frame


def weights_cost(path: str, rounds: int, seconds: float, batch_size: int = 8):
    """[(forward f/s, forward_with_weights f/s)] per round, the order swapped every round."""
    module = torch.jit.load(path, map_location="cpu")
    lr = torch.rand(batch_size, 3, 32, 32)
    mask = torch.ones(batch_size, 3, dtype=torch.bool)
    out = []
    with torch.inference_mode():
        feats = module.encode_references(torch.rand(batch_size * 3, 1, 128, 128))
        feats = feats.reshape(batch_size, 3, *feats.shape[1:])
        plain = lambda: module(lr, feats, mask)
        weighted = lambda: module.forward_with_weights(lr, feats, mask)
        for r in range(rounds):
            if r % 2 == 0:
                a = frames_per_second(plain, batch_size, seconds)
                b = frames_per_second(weighted, batch_size, seconds)
            else:
                b = frames_per_second(weighted, batch_size, seconds)
                a = frames_per_second(plain, batch_size, seconds)
            out.append((a, b))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--weights_cost", action="store_true",
                        help="forward vs forward_with_weights, alternating rounds")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.weights_cost:
        for path in args.files:
            rounds = weights_cost(path, args.rounds, args.seconds)
            for r, (a, b) in enumerate(rounds):
                print(f"{path} round {r}: forward {a:.1f} f/s, forward_with_weights {b:.1f} f/s, "
                      f"ratio {b / a:.3f}")
            print(f"{path}: median ratio {statistics.median(b / a for a, b in rounds):.3f}")
        return
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
