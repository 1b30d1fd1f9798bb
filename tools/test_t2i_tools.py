#!/usr/bin/env python3
"""Checks of the T2I tools that run without the released weights or a text encoder.

- convert_t2i_checkpoint.py: a tiny random T2I network from the PyTorch reference, saved the
  way training checkpoints wrap it ({"ema": {"module.<name>": ...}, "steps": ...}), converts
  to safetensors whose tensors equal the originals and whose model reproduces the output;
  errors for --drop of nothing and for a non-tensor state dict.
- caption_features.py: its --self-test (fake tokenizer and encoder: right padding, truncation
  at 256, the trim to the longest caption, the null caption).
Run: /work/venv/bin/python tools/test_t2i_tools.py   (needs torch and safetensors)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS / "reference"))
from tim_t2i_reference import T2IConfig, TiMT2I, load_released_state_dict  # noqa: E402


def run(*args: str, ok: bool = True) -> str:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    if (result.returncode == 0) != ok:
        raise AssertionError(f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def test_converter(folder: Path) -> None:
    torch.manual_seed(5)
    cfg = T2IConfig(in_channels=4, hidden_size=16, depth=1, num_heads=2, patch_size=2, caption_dim=8, adaln_hidden=8)
    model = TiMT2I(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * 0.3)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["projector.0.weight"] = torch.randn(4, 16)
    torch.save({"ema": {"module." + k: v for k, v in sd.items()}, "steps": 100}, folder / "t2i_model.bin")
    out = run(str(TOOLS / "convert_t2i_checkpoint.py"), str(folder / "t2i_model.bin"), str(folder / "t2i.safetensors"))
    assert "unwrapped 'ema'" in out and "stripped the prefix 'module.'" in out and "T2I" in out, out
    converted = load_file(str(folder / "t2i.safetensors"))
    assert set(converted) == set(sd), "every tensor kept, names unwrapped"
    assert all(torch.equal(converted[k], sd[k]) for k in sd)
    with safe_open(str(folder / "t2i.safetensors"), "pt") as f:
        assert f.metadata()["model_type"] == "t2i"
    clone = TiMT2I(cfg)
    load_released_state_dict(clone, converted)
    x, t, r, cap = torch.randn(2, 4, 4, 6), torch.tensor([0.9, 0.4]), torch.tensor([0.1, 0.4]), torch.randn(2, 3, 8)
    assert torch.equal(clone(x, t, r, cap), model(x, t, r, cap))
    out = run(str(TOOLS / "convert_t2i_checkpoint.py"), str(folder / "t2i_model.bin"), str(folder / "b.safetensors"),
              "--drop", "projector.", "--dtype", "bfloat16", "--num-heads", "2")
    assert "dropped 1 tensors under 'projector.'" in out, out
    with safe_open(str(folder / "b.safetensors"), "pt") as f:
        assert f.metadata()["num_heads"] == "2"
        assert f.get_tensor("blocks.0.cross_attn.q.weight").dtype == torch.bfloat16
        assert not any(k.startswith("projector.") for k in f.keys())
    run(str(TOOLS / "convert_t2i_checkpoint.py"), str(folder / "t2i_model.bin"), str(folder / "c.safetensors"),
        "--drop", "nothing.", ok=False)
    torch.save({"weights": [1, 2, 3]}, folder / "odd.bin")
    out = run(str(TOOLS / "convert_t2i_checkpoint.py"), str(folder / "odd.bin"), str(folder / "d.safetensors"), ok=False)
    assert "no known wrapper key" in out, out
    print("ok   convert_t2i_checkpoint.py")


def main() -> None:
    torch.set_default_dtype(torch.float64)
    with tempfile.TemporaryDirectory() as tmp:
        test_converter(Path(tmp))
    out = run(str(TOOLS / "caption_features.py"), "--self-test")
    assert "self-test passed" in out, out
    print("ok   caption_features.py --self-test")


if __name__ == "__main__":
    main()
