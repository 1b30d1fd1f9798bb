"""What the tests of the Python package share (docs/python.md, "Tests"): the repository's paths,
the `tim` program to compare against, and a small safetensors reader and writer (the format is an
8-byte header length, a JSON header and the raw little-endian data), so the tests need nothing
beyond NumPy and pytest."""

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "tim-fmnist.safetensors"
DATA = REPO / "tests" / "data"

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "U8": np.uint8}


def read_safetensors(path):
    """(tensors as NumPy arrays, metadata) of a safetensors file."""
    data = Path(path).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = data[8 + length + begin:8 + length + end]
        tensors[name] = np.frombuffer(raw, dtype=_DTYPES[info["dtype"]]).reshape(info["shape"]).copy()
    return tensors, metadata


def write_safetensors(path, tensors, metadata=None):
    """Writes NumPy arrays (F64, F32, I64, ...) as a safetensors file."""
    names = {np.dtype(v): k for k, v in _DTYPES.items()}
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def _program():
    path = Path(os.environ.get("TIM_PROGRAM", REPO / "build" / "apps" / "tim"))
    if path.is_file():
        return path
    if os.environ.get("TIM_REQUIRE_PROGRAM") == "1":  # scripts/test.sh: the comparison must run
        pytest.fail(f"the tim program is not at {path} (set TIM_PROGRAM)")
    pytest.skip(f"the tim program is not at {path}: build it (scripts/build.sh) or set TIM_PROGRAM")


@pytest.fixture
def tim_program():
    """Runs the `tim` program with arguments; returns the completed process (checked)."""
    program = _program()

    def run(*args):
        result = subprocess.run([str(program), *map(str, args)], capture_output=True, text=True)
        assert result.returncode == 0, f"tim {' '.join(map(str, args))} failed: {result.stderr}"
        return result

    return run


@pytest.fixture(scope="session")
def model():
    import tim

    return tim.load(MODEL)
