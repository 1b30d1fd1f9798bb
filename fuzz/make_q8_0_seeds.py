"""Writes the seed corpus of fuzz/fuzz_q8_0_layout.cpp into fuzz/corpus/q8_0_layout/: one valid
q8_0 file (the layout tim convert writes: docs/safetensors.md, "q8_0 weights") and one file for each
thing read_q8_0_layout / load_q8_0 must refuse. Deterministic (seed 0). Run:
  /tmp/nnvenv/bin/python fuzz/make_q8_0_seeds.py"""
import json
import os

import numpy as np
from safetensors.numpy import save

out = os.path.join(os.path.dirname(__file__), "corpus", "q8_0_layout")
rng = np.random.default_rng(0)


def quantised(n, k):
    w = rng.normal(size=(n, k)).astype(np.float32)
    blocks = (k + 31) // 32
    scales = np.zeros((n, blocks), np.float16)
    q = np.zeros((n, k), np.int8)
    for b in range(blocks):
        part = w[:, b * 32:(b + 1) * 32]
        d = (np.abs(part).max(axis=1) / 127).astype(np.float16)
        scales[:, b] = d
        q[:, b * 32:(b + 1) * 32] = np.clip(np.rint(part / d.astype(np.float32)[:, None]), -127, 127)
    return q, scales


def meta(names, **extra):
    m = {"tim.quantization": "q8_0", "tim.q8_0.block_size": "32", "tim.q8_0.tensors": json.dumps(names)}
    m.update(extra)
    return m


def write(name, tensors, metadata):
    with open(os.path.join(out, name + ".safetensors"), "wb") as f:
        f.write(save(tensors, metadata=metadata))


qa, sa = quantised(3, 40)
qb, sb = quantised(2, 64)
valid = {"a.weight": qa, "a.weight.q8_0_scale": sa, "b.weight": qb, "b.weight.q8_0_scale": sb,
         "a.bias": rng.normal(size=3).astype(np.float32), "norm.weight": np.ones(4, np.float16),
         "table.embedding_table.weight": rng.normal(size=(5, 40)).astype(np.float32)}
write("valid", valid, meta(["a.weight", "b.weight"]))
write("unknown_quantization", valid, meta(["a.weight", "b.weight"], **{"tim.quantization": "q4_0"}))
write("block_size_16", valid, meta(["a.weight", "b.weight"], **{"tim.q8_0.block_size": "16"}))
write("list_not_json", valid, meta([], **{"tim.q8_0.tensors": "[a.weight"}))
write("list_not_array", valid, meta([], **{"tim.q8_0.tensors": '{"a": 1}'}))
write("list_duplicate", valid, meta(["a.weight", "a.weight", "b.weight"]))
write("list_missing_tensor", valid, meta(["a.weight", "b.weight", "c.weight"]))
write("orphan_scales", valid, meta(["a.weight"]))
write("scales_without_metadata", valid, {})
bad = dict(valid, **{"a.weight.q8_0_scale": np.zeros((3, 1), np.float16)})
write("scales_wrong_shape", bad, meta(["a.weight", "b.weight"]))
bad = dict(valid, **{"a.weight.q8_0_scale": sa.astype(np.float32)})
write("scales_wrong_dtype", bad, meta(["a.weight", "b.weight"]))
bad = dict(valid, **{"a.weight": qa.astype(np.int16)})
write("values_wrong_dtype", bad, meta(["a.weight", "b.weight"]))
q = qa.copy()
q[1, 5] = -128
write("value_minus_128", dict(valid, **{"a.weight": q}), meta(["a.weight", "b.weight"]))
s = sa.copy()
s[0, 1] = -s[0, 1]
write("negative_scale", dict(valid, **{"a.weight.q8_0_scale": s}), meta(["a.weight", "b.weight"]))
s = sa.copy()
s[2, 0] = np.inf
write("infinite_scale", dict(valid, **{"a.weight.q8_0_scale": s}), meta(["a.weight", "b.weight"]))
write("unquantised", {"x.weight": rng.normal(size=(2, 33)).astype(np.float32)}, {"format": "pt"})
