"""Independent Python copy of tim's epoch order (include/tim/train/data_order.hpp), written from its
documented definition, and the writer of its golden file.

The order of epoch e of n samples for a seed is a Fisher-Yates shuffle from the top of 0 .. n-1:
for i = n-1 down to 1, swap position i with j uniform in [0, i]. The draws are 32-bit words of
the Philox4x32-10 stream (tools/reference/philox.py) with key = seed, counter = (w // 4, step =
0x4F524452 "ORDR", sample = e lo32, e hi32), word w being lane w % 4, taken in order. j comes from
Lemire's multiply-and-reject: m = x (i + 1); while (m mod 2^32) < (2^32 mod (i + 1)) draw again
(the test runs only when (m mod 2^32) < i + 1); j = m >> 32.

  python data_order.py            # writes tests/data/data_golden/epoch_order.safetensors
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from philox import philox4x32  # noqa: E402

ORDER_STEP = 0x4F524452
OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "data_golden" / "epoch_order.safetensors"
CASES = [(10, 5, 0), (10, 5, 1), (10, 5, 2), (1000, 123456789012, 7), (3, 2**64 - 1, 2**40)]


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    key = (seed & 0xFFFFFFFF, seed >> 32)
    state = {"word": 0, "block": None}

    def next_word() -> int:
        w = state["word"]
        if w % 4 == 0:
            counter = (w // 4, ORDER_STEP, epoch & 0xFFFFFFFF, epoch >> 32)
            state["block"] = philox4x32(counter, key)
        state["word"] = w + 1
        return state["block"][w % 4]

    order = list(range(n))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        m = next_word() * bound
        if (m & 0xFFFFFFFF) < bound:
            threshold = (1 << 32) % bound
            while (m & 0xFFFFFFFF) < threshold:
                m = next_word() * bound
        j = m >> 32
        order[i], order[j] = order[j], order[i]
    return order


def main() -> int:
    tensors = {}
    for k, (n, seed, epoch) in enumerate(CASES):
        tensors[f"order.{k}"] = torch.tensor(epoch_order(n, seed, epoch), dtype=torch.int64)
        # seed and epoch as two 32-bit halves each (int64 cannot hold 2^64 - 1)
        tensors[f"case.{k}"] = torch.tensor([n, seed & 0xFFFFFFFF, seed >> 32, epoch & 0xFFFFFFFF, epoch >> 32],
                                            dtype=torch.int64)
    save_file(tensors, str(OUT), metadata={"generator": "tools/reference/data_order.py"})
    print(f"wrote {OUT}: {len(CASES)} orders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
