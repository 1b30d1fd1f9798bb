#!/usr/bin/env python3
"""Writes a random-weight text-encoder folder at the released google/gemma-3-1b-it shapes for
bench/bench_text_encoder.cpp and bench/compare_text_encoder.py: config.json (the released one's
values), model.safetensors (bfloat16, Hugging Face's names, ~2 GB; weights N(0, 1/fan_in), norm
weights N(0, 0.1^2), embeddings N(0, 0.05^2), seed 0) and the tokenizer tests' tokenizer.model.
Not committed: write it under /tmp.
Usage: /tmp/nnvenv/bin/python bench/make_random_gemma.py /tmp/gemma-random
"""

import json
import math
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools" / "reference"))
from gemma_reference import GemmaConfig, parameter_shapes  # noqa: E402

RELEASED = {"architectures": ["Gemma3ForCausalLM"], "attention_bias": False, "attn_logit_softcapping": None,
            "bos_token_id": 2, "eos_token_id": [1, 106], "final_logit_softcapping": None, "head_dim": 256,
            "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 1152, "intermediate_size": 6912,
            "max_position_embeddings": 32768, "model_type": "gemma3_text", "num_attention_heads": 4,
            "num_hidden_layers": 26, "num_key_value_heads": 1, "pad_token_id": 0, "query_pre_attn_scalar": 256,
            "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000, "rope_scaling": None, "rope_theta": 1000000,
            "sliding_window": 512, "sliding_window_pattern": 6, "torch_dtype": "bfloat16", "vocab_size": 262144}


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    config = GemmaConfig.from_json(RELEASED)
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name, shape in parameter_shapes(config).items():
        if len(shape) == 1:
            t = torch.randn(shape, generator=g) * 0.1
        elif "embed_tokens" in name:
            t = torch.randn(shape, generator=g) * 0.05
        else:
            t = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        tensors[name] = t.to(torch.bfloat16)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(RELEASED, indent=2) + "\n")
    shutil.copyfile(ROOT / "tests" / "data" / "tokenizer" / "gemma_like.model", out / "tokenizer.model")
    print(f"wrote {out}: {sum(t.numel() for t in tensors.values()) / 1e6:.1f} M parameters, "
          f"{(out / 'model.safetensors').stat().st_size / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
