#!/usr/bin/env python3
"""Checks `tim forward` and `tim sample` with --device cuda against the same commands on the CPU,
on a machine with a GPU (scripts/device-run.sh runs it). Needs numpy and safetensors.

  python3 tests/cuda/check_cli.py build-device/apps/tim models/tim-fmnist.safetensors [--grid OUT.png] \
      [--vae-case tests/data/vae_golden/sd_layout.safetensors --vae-case tests/data/dc_ae_golden/variants.safetensors
       --c2i-case tests/data/golden/square.safetensors]

With --vae-case (repeatable) and --c2i-case, also `tim sample --vae` with the decoder of each golden
file (an SD VAE or a DC-AE with 4 latent channels, and a config.json from the file's metadata)
decoding on the GPU against the same command on the CPU.

Relative error ||gpu - cpu|| / ||cpu|| must stay under 1e-4 for float32 and 5e-2 for bfloat16
(bfloat16 storage rounds every activation to 8 significant bits). Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2}


def run(*args: str) -> None:
    print("$ " + " ".join(args), flush=True)
    done = subprocess.run(args, capture_output=True, text=True)
    sys.stdout.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"check_cli: exit status {done.returncode}")


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


def without_io(path: str) -> dict:
    return {k: v.astype(np.float32) for k, v in load_file(path).items() if not k.startswith(("input.", "output."))}


def check_vae(args: argparse.Namespace, case: str, d: Path) -> int:
    """tim sample --vae on the GPU (decoder included) against the CPU; returns the failure count."""
    import json
    from safetensors import safe_open
    with safe_open(case, "np") as f:
        meta = f.metadata()
    if "norm_num_groups" in meta:
        config = {"_class_name": "AutoencoderKL", "norm_num_groups": int(meta["norm_num_groups"])}
    else:
        config = {"_class_name": "AutoencoderDC", "attention_head_dim": int(meta["attention_head_dim"]),
                  "decoder_in_shortcut": meta["in_shortcut"] == "true"}
    folder = d / ("vae-" + Path(case).parent.name + "-" + Path(case).stem)
    folder.mkdir()
    weights = folder / "diffusion_pytorch_model.safetensors"
    save_file(without_io(case), str(weights))
    (folder / "config.json").write_text(json.dumps(config))
    with safe_open(args.c2i_case, "np") as f:
        metadata = f.metadata()
    save_file(without_io(args.c2i_case), str(d / "c2i.safetensors"), metadata=metadata)
    common = ["sample", "--model", str(d / "c2i.safetensors"), "--labels", "0,1,2", "--height", "8", "--width", "8",
              "--steps", "2", "--seed", "3", "--vae", str(weights)]
    failures = 0
    for tiled in (False, True):
        extra = ["--vae-tile", "4", "--vae-overlap", "2"] if tiled else []
        tag = "tiled-" if tiled else ""
        run(args.tim, *common, *extra, "--out", str(folder / f"{tag}cpu.st"), "-v")
        run(args.tim, *common, *extra, "--device", "cuda", "--out", str(folder / f"{tag}gpu.st"),
            "--png-dir", str(folder / f"{tag}png"), "-v")
        cpu, gpu = load_file(str(folder / f"{tag}cpu.st")), load_file(str(folder / f"{tag}gpu.st"))
        error = relative_error(gpu["images"], cpu["images"])
        ok = gpu["images"].shape == cpu["images"].shape and error <= TOLERANCE["float32"]
        failures += not ok
        print(f"sample --vae {config['_class_name']} ({Path(case).name}){' --vae-tile 4' if tiled else ''}, decoded on "
              f"the GPU: images {gpu['images'].shape}, relative error {error:.3g} (limit {TOLERANCE['float32']:g}) "
              f"{'ok' if ok else 'FAILED'}", flush=True)
    return failures


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("tim")
    ap.add_argument("model")
    ap.add_argument("--grid", help="also write a class grid sampled on the GPU here")
    ap.add_argument("--vae-case", action="append", default=[],
                    help="a 4-latent-channel tests/data/vae_golden or dc_ae_golden file: its decoder for tim sample --vae")
    ap.add_argument("--c2i-case", help="a 4-channel tests/data/golden file: the model for --vae")
    args = ap.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        rng = np.random.default_rng(11)
        save_file({"x": rng.standard_normal((3, 1, 32, 32)).astype(np.float32),
                   "t": np.array([0.9, 0.5, 0.2], np.float32), "r": np.array([0.4, 0.5, 0.0], np.float32),
                   "y": np.array([0, 7, 10], np.int64)}, str(d / "inputs.safetensors"))
        run(args.tim, "forward", "--model", args.model, "-i", str(d / "inputs.safetensors"), "-o", str(d / "cpu.st"))
        cpu = load_file(str(d / "cpu.st"))["out"]
        for precision in ("float32", "bfloat16"):
            out = d / f"forward-{precision}.st"
            run(args.tim, "forward", "--device", "cuda", "--precision", precision, "--model", args.model,
                "-i", str(d / "inputs.safetensors"), "-o", str(out), "-v")
            error = relative_error(load_file(str(out))["out"], cpu)
            ok = error <= TOLERANCE[precision]
            failures += not ok
            print(f"forward {precision}: relative error {error:.3g} (limit {TOLERANCE[precision]:g}) "
                  f"{'ok' if ok else 'FAILED'}", flush=True)

        common = ["sample", "--model", args.model, "--labels", "0,1,2,3,4,5,6,7,8,9", "--seed", "5", "--steps", "4",
                  "--cfg-scale", "2", "--guidance-high", "1.01", "--stochasticity", "0.3"]
        run(args.tim, *common, "--out", str(d / "sample-cpu.st"))
        cpu = load_file(str(d / "sample-cpu.st"))["latents"]
        for precision in ("float32", "bfloat16"):
            out = d / f"sample-{precision}.st"
            run(args.tim, *common, "--device", "cuda", "--precision", precision, "--out", str(out), "-v")
            error = relative_error(load_file(str(out))["latents"], cpu)
            ok = error <= TOLERANCE[precision]
            failures += not ok
            print(f"sample (4 steps, guided, stochastic) {precision}: relative error {error:.3g} "
                  f"(limit {TOLERANCE[precision]:g}) {'ok' if ok else 'FAILED'}", flush=True)
        if args.vae_case and args.c2i_case:
            for case in args.vae_case:
                failures += check_vae(args, case, d)
        if args.grid:
            run(args.tim, "sample", "--model", args.model, "--device", "cuda", "--grid", args.grid, "-v")
    print(f"check_cli: {'all passed' if failures == 0 else f'{failures} FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
