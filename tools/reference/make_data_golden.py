"""Write the golden file of the C++ Fashion-MNIST reader (tim/train/datasets.hpp) from
tools/reference/train.py's own loader: load_fashion_mnist (Debian package dataset-fashion-mnist,
28x28 padded to 32x32 with 0) and to_model_range (x / 127.5 - 1 in float32), for a few images of
each split, with their labels and the split sizes.

File: tests/data/data_golden/fashion_mnist.safetensors with index_<split> (k,) int64,
x_<split> (k, 1, 32, 32) float32, y_<split> (k,) int64, size_<split> (1,) int64, split train/test.
Usage: /tmp/nnvenv/bin/python tools/reference/make_data_golden.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import load_fashion_mnist, to_model_range  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "data_golden" / "fashion_mnist.safetensors"
INDICES = {"train": [0, 1, 12345, 59999], "test": [0, 9999]}


def main() -> int:
    tensors = {}
    for split, indices in INDICES.items():
        images, labels, data_dir = load_fashion_mnist(None, split)
        idx = torch.tensor(indices, dtype=torch.int64)
        tensors[f"index_{split}"] = idx
        tensors[f"x_{split}"] = to_model_range(images[idx]).contiguous()
        tensors[f"y_{split}"] = labels[idx].contiguous()
        tensors[f"size_{split}"] = torch.tensor([len(labels)], dtype=torch.int64)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT), metadata={"generator": "tools/reference/make_data_golden.py", "data_dir": data_dir})
    print(f"wrote {OUT} from {data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
