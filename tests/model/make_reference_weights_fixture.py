"""Writes the reference weights the Python model gives for model_runner_test's inputs.

model_runner_test (ModelRunnerWeights) feeds the C++ runner the same frames and references
and compares its weights with these. Regenerate after re-exporting the model:

    /usr/bin/python3 tests/model/make_reference_weights_fixture.py \
        model/weights/fsrst_x4_small.pt > tests/model/testdata/fsrst_x4_small_weights.txt
"""
import sys

import torch

# (frame seed, reference seed, reference count): the cases of model_runner_test.
CASES = [(10, 1, 2), (11, 0, 0), (12, 2, 3)]
LR, R = 32, 128


def pattern(n: int, seed: int) -> torch.Tensor:
    """model_runner_test's Pattern(): xorshift32 bytes."""
    x = (2463534242 + seed) & 0xFFFFFFFF
    out = bytearray(n)
    for i in range(n):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out[i] = x & 0xFF
    return torch.tensor(list(out), dtype=torch.uint8)


def main() -> None:
    model = torch.jit.load(sys.argv[1], map_location="cpu").eval()
    print("# frame_seed reference_seed count weights... (make_reference_weights_fixture.py)")
    with torch.no_grad():
        for frame_seed, ref_seed, count in CASES:
            lr = pattern(LR * LR * 3, frame_seed).reshape(1, LR, LR, 3).permute(0, 3, 1, 2)
            lr = lr.float().div(255.0).contiguous()
            if count > 0:
                luma = pattern(count * R * R, ref_seed).float().div(255.0).reshape(count, 1, R, R)
                feats = model.encode_references(luma).unsqueeze(0)
            else:
                channels = model.encode_references(torch.zeros(1, 1, R, R)).shape[1]
                feats = torch.zeros(1, 0, channels, LR, LR)
            mask = torch.ones(1, count, dtype=torch.bool)
            _, weights = model.forward_with_weights(lr, feats, mask)
            values = " ".join("%.9g" % w for w in weights[0].tolist())
            print(f"{frame_seed} {ref_seed} {count} {values}".rstrip())


if __name__ == "__main__":
    main()
