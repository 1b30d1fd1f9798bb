"""Writes tests/data/python_written.safetensors with the reference `safetensors` library, so the
C++ reader is tested against a file it did not write itself (test_safetensors.cpp asserts every
value below exactly).

Usage (from the repository root):  /work/venv/bin/python tools/reference/make_python_written.py

Contents (all values exactly representable in their dtype):
  f32     F32  (2, 3)  arange(6) * 0.5 - 1          -> -1.0 -0.5 0.0 0.5 1.0 1.5
  f64     F64  (3,)    [1/3, -2.5, 1e300]
  f16     F16  (2, 2)  [1.0, -2.0, 0.1 rounded to F16 (0.0999755859375), 65504.0 (largest finite)]
  bf16    BF16 (4,)    [1.0, -3.140625, 1e38 rounded to BF16 (0x7e96), 0.0]
  i64     I64  (2, 2)  [-9223372036854775808, -1, 0, 9223372036854775807]
  i32     I32  (3,)    [-7, 0, 2147483647]
  u8      U8   (4,)    [0, 1, 128, 255]
  flags   BOOL (3,)    [True, False, True]
  empty   F32  (0, 4)  no elements
  noise   F32  (2, 2)  torch.randn with a Generator seeded 20240601 (values printed below,
                       copied into the test as float32 bit patterns)
  metadata: {"format": "pt", "source": "tools/reference/make_python_written.py"}
"""
import pathlib
import struct

import torch
from safetensors.torch import save_file

SEED = 20240601


def main() -> None:
    generator = torch.Generator().manual_seed(SEED)
    tensors = {
        "f32": (torch.arange(6, dtype=torch.float32) * 0.5 - 1).reshape(2, 3),
        "f64": torch.tensor([1.0 / 3.0, -2.5, 1e300], dtype=torch.float64),
        "f16": torch.tensor([[1.0, -2.0], [0.1, 65504.0]], dtype=torch.float16),
        "bf16": torch.tensor([1.0, -3.14159, 1e38, 0.0], dtype=torch.bfloat16),
        "i64": torch.tensor([[-(2**63), -1], [0, 2**63 - 1]], dtype=torch.int64),
        "i32": torch.tensor([-7, 0, 2**31 - 1], dtype=torch.int32),
        "u8": torch.tensor([0, 1, 128, 255], dtype=torch.uint8),
        "flags": torch.tensor([True, False, True], dtype=torch.bool),
        "empty": torch.zeros(0, 4, dtype=torch.float32),
        "noise": torch.randn(2, 2, generator=generator, dtype=torch.float32),
    }
    metadata = {"format": "pt", "source": "tools/reference/make_python_written.py"}
    out = pathlib.Path(__file__).resolve().parents[2] / "tests" / "data" / "python_written.safetensors"
    save_file(tensors, str(out), metadata=metadata)

    print(f"wrote {out} ({out.stat().st_size} bytes)")
    for name in ("f16", "bf16"):
        bits = tensors[name].flatten().view(torch.int16).tolist()
        print(name, [float(v) for v in tensors[name].flatten().float()], [hex(b & 0xFFFF) for b in bits])
    noise = tensors["noise"].flatten().tolist()
    print("noise", [f"{v!r} 0x{struct.unpack('<I', struct.pack('<f', v))[0]:08x}" for v in noise])


if __name__ == "__main__":
    main()
