"""Write the golden text-encoder folders of the C++ Gemma-3 tests with gemma_reference.py.

Each case is a folder tests/data/golden_gemma/<case>/ laid out like the released
google/gemma-3-1b-it folder (config.json, model.safetensors with Hugging Face's names, and for
the first case tokenizer.model, the tokenizer tests' model), plus expected.safetensors: the
input ids and attention mask (int64) and both hidden states of gemma_reference.encode in float64
(`last`, `penultimate`, [B, N, D]). Weights are seeded random values rounded to the stored dtype,
so the file holds exactly what the reference computed with.

  released_pattern  config in the released form (rope_theta, rope_local_base_freq,
                    sliding_window_pattern 6 -> layer 5 of 7 global), 4 query heads on 1 kv head
                    (as gemma-3-1b), window 4 shorter than the prompts, bfloat16 weights, the ids
                    of three real prompts framed by the tokenizer (max_length 8: one truncated,
                    two padded)
  gqa_layer_types   config in the newer form (layer_types, rope_parameters), 4 heads on 2 kv
                    heads, query_pre_attn_scalar 12 (not hd), float32 weights, random ids

Usage: /tmp/nnvenv/bin/python tools/reference/make_gemma_golden.py [--check]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gemma_reference import GemmaConfig, encode, random_weights  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT = REPO_ROOT / "tests" / "data" / "golden_gemma"
TOKENIZER = REPO_ROOT / "tests" / "data" / "tokenizer" / "gemma_like.model"
PROMPTS = ["a red fox in the snow at sunset", "café 🤖", "the lazy dog"]


def released_pattern():
    c = GemmaConfig(vocab_size=420, hidden_size=32, intermediate_size=48, num_hidden_layers=7,
                    num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                    sliding_window=4, layer_types=None)
    c.layer_types = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(7)]
    config = c.to_json()
    config.pop("layer_types")
    config["sliding_window_pattern"] = 6
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(TOKENIZER))
    N = 8
    rows = [([sp.bos_id()] + sp.encode(p))[:N] for p in PROMPTS]
    lengths = [len(r) for r in rows]
    ids = torch.tensor([r + [sp.pad_id()] * (N - len(r)) for r in rows])
    return c, config, torch.bfloat16, ids, torch.tensor(lengths), 2001


def gqa_layer_types():
    c = GemmaConfig(vocab_size=50, hidden_size=24, intermediate_size=40, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=12,
                    sliding_window=5, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                    rope_theta=500_000.0, rope_local_base_freq=1_000.0)
    config = c.to_json()
    config.pop("rope_theta"), config.pop("rope_local_base_freq")
    config["rope_parameters"] = {"full_attention": {"rope_type": "default", "rope_theta": 500_000.0},
                                 "sliding_attention": {"rope_type": "default", "rope_theta": 1_000.0}}
    g = torch.Generator().manual_seed(2002)
    N, lengths = 9, torch.tensor([9, 7, 5])
    ids = torch.randint(4, c.vocab_size, (3, N), generator=g)
    ids[:, 0] = 2
    ids = torch.where(torch.arange(N)[None, :] < lengths[:, None], ids, torch.zeros_like(ids))
    return c, config, torch.float32, ids, lengths, 2003


CASES = {"released_pattern": released_pattern, "gqa_layer_types": gqa_layer_types}


def write_case(name: str, out: Path) -> None:
    c, config, dtype, ids, lengths, seed = CASES[name]()
    assert int((ids.shape[1] - lengths).max()) < c.sliding_window  # every padded query row sees a real key
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    stored = {k: v.to(dtype).contiguous() for k, v in random_weights(c, torch.Generator().manual_seed(seed)).items()}
    exact = {k: v.to(torch.float64) for k, v in stored.items()}
    with torch.no_grad():
        last, penultimate = encode(c, exact, ids, lengths, normalizer_dtype=dtype)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(stored, str(folder / "model.safetensors"), metadata={"format": "pt"})
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).to(torch.int64)
    save_file({"input_ids": ids.to(torch.int64).contiguous(), "attention_mask": mask, "last": last.contiguous(),
               "penultimate": penultimate.contiguous()}, str(folder / "expected.safetensors"),
              metadata={"generator": "tools/reference/make_gemma_golden.py", "case": name,
                        "prompts": json.dumps(PROMPTS) if name == "released_pattern" else ""})
    if name == "released_pattern":
        shutil.copyfile(TOKENIZER, folder / "tokenizer.model")
    print(f"{name}: lengths {lengths.tolist()}, max |last| {last.abs().max():.3f}, {c.num_hidden_layers} layers")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="regenerate in a temporary folder and compare")
    args = parser.parse_args()
    if not args.check:
        for name in CASES:
            write_case(name, OUT)
        return 0
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            write_case(name, Path(tmp))
            for file in ("model.safetensors", "expected.safetensors"):
                a, b = load_file(str(Path(tmp) / name / file)), load_file(str(OUT / name / file))
                same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
                print(f"{name}/{file}:", "identical" if same else "DIFFERENT")
                ok &= same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
