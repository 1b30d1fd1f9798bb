#!/usr/bin/env python3
"""Times the Gemma-3 text encoder in transformers on the CPU at the shapes of
bench/bench_text_encoder.cpp (one prompt of 256 tokens through the random-weight 1B folder of
bench/make_random_gemma.py), for a same-session comparison with the C++ numbers; optionally
checks tim's features (a `tim encode` output) against transformers' on the same ids.

transformers' Gemma3ForCausalLM(...).model (the decoder stack, as the released get_decoder()),
loaded with from_pretrained from the folder, in float32 and in bfloat16 (the released dtype),
attn_implementation sdpa, torch.inference_mode(), torch.set_num_threads(2) by default. Each time
is the median of --repeats forwards after one warm-up; the peak resident memory is the process's
(ru_maxrss) after that dtype's runs, reported separately per dtype (each in a child process).
Usage:
  OMP_WAIT_POLICY=PASSIVE /tmp/nnvenv/bin/python bench/compare_text_encoder.py /tmp/gemma-random \
      [--threads 2] [--check-tim caps.safetensors]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def run(folder: str, dtype_name: str, threads: int, repeats: int) -> dict:
    from transformers import Gemma3ForCausalLM
    torch.set_num_threads(threads)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    start = time.perf_counter()
    model = Gemma3ForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa").model.eval()
    load = time.perf_counter() - start
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, model.config.vocab_size, (1, 256), generator=g)
    ids[0, 0] = 2
    mask = torch.ones_like(ids)
    times = []
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
        for _ in range(repeats):
            t = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"dtype": dtype_name, "median_s": statistics.median(times), "times_s": times, "load_s": load,
            "peak_rss_MiB": peak / 2**20, "threads": threads, "torch": torch.__version__}


def check_tim(folder: str, caps: str) -> None:
    from safetensors.torch import load_file
    from transformers import Gemma3ForCausalLM
    tim = load_file(caps)
    ids, mask = tim["input_ids"], tim["cap_mask"]
    model = Gemma3ForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").model.eval()
    with torch.inference_mode():
        theirs = model(input_ids=ids, attention_mask=mask).last_hidden_state
    # transformers' embedding scale is a float32 buffer converted with the model: sqrt(D) in
    # float32 here, bfloat16(sqrt(D)) = 34 in the released bfloat16 runs, which tim follows for a
    # bfloat16 file. Compare both ways.
    scale = model.embed_tokens.embed_scale.clone()
    model.embed_tokens.embed_scale.copy_(scale.to(torch.bfloat16).to(torch.float32))
    with torch.inference_mode():
        theirs_bf16_scale = model(input_ids=ids, attention_mask=mask).last_hidden_state
    ours = tim["cap_feats"]
    real = mask.bool()
    for label, reference in (("float32 scale", theirs), ("bfloat16 scale (as released)", theirs_bf16_scale)):
        error = ((ours - reference).abs()[real].max() / reference.abs()[real].max()).item()
        print(json.dumps({"check": f"tim encode vs transformers float32 eager, {label}, real positions",
                          "tokens": int(mask.sum()), "relative_error": error}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"])
    parser.add_argument("--check-tim")
    args = parser.parse_args()
    if args.check_tim:
        check_tim(args.folder, args.check_tim)
        return 0
    if args.dtype:
        print(json.dumps(run(args.folder, args.dtype, args.threads, args.repeats)))
        return 0
    for dtype in ("float32", "bfloat16"):  # each in its own process, so each peak is its own
        subprocess.run([sys.executable, __file__, args.folder, "--dtype", dtype, "--threads", str(args.threads),
                        "--repeats", str(args.repeats)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
