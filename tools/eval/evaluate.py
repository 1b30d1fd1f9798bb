"""Any-step quality of the shipped models (docs/results.md): samples drawn by the C++ library
(`tim sample`), scored by the Fashion-MNIST classifier of classifier.py.

For every (model, guidance, steps) setting, `run` draws N samples (labels 0..9 in turn, so every
class gets N/10; sample indices 0..N-1 of --seed) with `tim sample`, quantises them to uint8 as
`tim sample --png-dir` would (clamp(255 (x + 1) / 2, 0, 255) truncated, SPEC 8), and records
  - accuracy: how often the classifier's prediction is the conditioning label;
  - fd: the Frechet distance between Gaussians fitted to the classifier's 128-d features of the
    samples and of the 10,000 test images.
Results are appended to a JSON-lines file; settings already there are skipped, so an
interrupted run continues. `report` turns the file into the markdown table and the plot.

  python tools/eval/evaluate.py run --out docs/results.jsonl \
      --model tim=models/tim-fmnist.safetensors --cfg 1.0,2.0 --steps 1,2,4,8,16,32 --samples 2000
  python tools/eval/evaluate.py report --results docs/results.jsonl --plot docs/images/fd-vs-steps.png

`--tim` is the command-line program (default build/apps/tim). The sampler mode is the model's
own (its metadata's sample_type: transition for TiM, diffusion = Euler steps for the
flow-matching baseline). Guidance uses the window [0, --guidance-high] in fractions of T_max;
the default 1.01 reaches past T_max = 1, so the first step (t = T_max) is guided too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import classifier as C  # noqa: E402
import train as T       # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), in float64. The trace of the root
    is computed from symmetric eigendecompositions: (S1 S2)^(1/2) is similar to
    (S1^(1/2) S2 S1^(1/2))^(1/2), which is symmetric positive semi-definite."""
    w1, v1 = np.linalg.eigh(cov1)
    root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    middle = root1 @ cov2 @ root1
    w = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_root = np.sqrt(np.clip(w, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_root)


def gaussian(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    f = features.double().numpy()
    return f.mean(0), np.cov(f, rowvar=False)


def quantise(x: torch.Tensor) -> torch.Tensor:
    """Model range -> uint8 -> model range, as the PNG writer stores a sample (SPEC 8: clamp,
    then truncate; in float32 like apps/image_grid.hpp)."""
    value = torch.nan_to_num(255.0 * (x.float() + 1.0) / 2.0, nan=0.0)
    u8 = torch.floor(torch.clamp(value, 0, 255))
    return (u8 / 127.5 - 1.0).float()


def balanced_labels(n: int) -> list[int]:
    return [b % 10 for b in range(n)]


def weight_dtypes(path: str) -> str:
    """The file's tensor dtypes with their counts, e.g. "BF16 x52, F32 x20" (what the weights were)."""
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    counts: dict[str, int] = {}
    for name, info in header.items():
        if name != "__metadata__":
            counts[info["dtype"]] = counts.get(info["dtype"], 0) + 1
    return ", ".join(f"{d} x{n}" for d, n in sorted(counts.items()))


def model_metadata(path: str) -> dict:
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        return f.metadata() or {}


def draw(tim: str, model: str, steps: int, cfg: float, guidance_high: float, samples: int, seed: int,
         threads: int, weights: str = "stored", precision: str = "float32") -> tuple[torch.Tensor, torch.Tensor, float]:
    """Samples (N, 1, 32, 32) and their labels from `tim sample`, and the seconds it took.
    `weights` and `precision` are tim sample's --weights (stored|float) and --precision."""
    from safetensors.torch import load_file
    labels = balanced_labels(samples)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "samples.safetensors")
        command = [tim, "sample", "--model", model, "--steps", str(steps), "--cfg-scale", repr(cfg),
                   "--guidance-low", "0", "--guidance-high", repr(guidance_high), "--seed", str(seed),
                   "--threads", str(threads), "--weights", weights, "--precision", precision,
                   "--labels", ",".join(map(str, labels)), "--out", out]
        start = time.time()
        subprocess.run(command, check=True)
        seconds = time.time() - start
        result = load_file(out)
    if result["labels"].tolist() != labels:
        raise SystemExit(f"{tim} wrote other labels than it was given")
    return result["latents"], result["labels"], seconds


def reference_statistics(classifier: C.Classifier, data_dir: str | None):
    images, labels, _ = T.load_fashion_mnist(data_dir, "test")
    _, features = C.run(classifier, T.to_model_range(images))
    return gaussian(features)


def score(classifier: C.Classifier, images: torch.Tensor, labels: torch.Tensor, reference) -> tuple[float, float]:
    logits, features = C.run(classifier, quantise(images))
    accuracy = (logits.argmax(1) == labels).double().mean().item()
    return accuracy, frechet_distance(*gaussian(features), *reference)


def read_results(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def setting_key(r: dict) -> tuple:
    """What identifies a record's setting. Records written before --weights/--precision existed
    had the weights widened to float and float32 products; real data has neither."""
    if r["name"] == "real data":
        weights = precision = "-"
    else:
        weights, precision = r.get("weights", "float"), r.get("precision", "float32")
    return (r["name"], r["steps"], r["cfg"], r["guidance_high"], r["samples"], r["seed"], weights, precision)


def run(args) -> None:
    torch.set_num_threads(args.threads)
    classifier = C.load(args.classifier)
    reference = reference_statistics(classifier, args.data_dir)
    done = {setting_key(r) for r in read_results(args.out)}
    steps_list = [int(s) for s in args.steps.split(",")]
    cfg_list = [float(c) for c in args.cfg.split(",")]
    if args.real_data:
        key = ("real data", 0, 1.0, 0.0, args.samples, args.seed, "-", "-")
        if key not in done:  # N training images, balanced like the samples: the floor of both metrics
            images, labels, _ = T.load_fashion_mnist(args.data_dir, "train")
            g = torch.Generator().manual_seed(args.seed)
            order = torch.randperm(len(labels), generator=g)
            picked = torch.cat([order[labels[order] == k][: args.samples // 10] for k in range(10)])
            accuracy, fd = score(classifier, T.to_model_range(images[picked]), labels[picked], reference)
            append(args.out, {"name": "real data", "model": "Fashion-MNIST training split", "mode": "-",
                              "steps": 0, "cfg": 1.0, "guidance_high": 0.0, "samples": len(picked),
                              "seed": args.seed, "accuracy": accuracy, "fd": fd, "seconds": 0.0})
    for spec in args.model:
        name, path = spec.split("=", 1)
        mode = model_metadata(path).get("sample_type", "transition")
        for cfg in cfg_list:
            for steps in steps_list:
                key = (name, steps, cfg, args.guidance_high, args.samples, args.seed, args.weights, args.precision)
                if key in done:
                    continue
                images, labels, seconds = draw(args.tim, path, steps, cfg, args.guidance_high, args.samples,
                                               args.seed, args.threads, args.weights, args.precision)
                accuracy, fd = score(classifier, images, labels, reference)
                append(args.out, {"name": name, "model": os.path.relpath(path, ROOT), "mode": mode,
                                  "steps": steps, "cfg": cfg, "guidance_high": args.guidance_high,
                                  "samples": args.samples, "seed": args.seed, "accuracy": accuracy,
                                  "fd": fd, "seconds": round(seconds, 2), "weights": args.weights,
                                  "precision": args.precision,
                                  "dtypes": weight_dtypes(path)})


def append(path: str, record: dict) -> None:
    print(f"{record['name']:>10}  steps {record['steps']:>2}  cfg {record['cfg']:<4}  "
          f"accuracy {record['accuracy']:.4f}  FD {record['fd']:8.3f}  ({record['seconds']:.0f} s)", flush=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def report_by_name(results: list[dict], samples: int | None) -> None:
    """One row per name (e.g. per weight type, in the file's order), one column per (guidance, steps)."""
    rows: dict[str, dict[tuple[float, int], dict]] = {}
    for r in results:
        if r["name"] != "real data" and (samples is None or r["samples"] == samples):
            rows.setdefault(r["name"], {})[(r["cfg"], r["steps"])] = r
    columns = sorted({k for cells in rows.values() for k in cells})
    print("| weights | " + " | ".join(f"{s} step{'s' if s > 1 else ''}, guidance {c:g}" for c, s in columns) + " |")
    print("|" + "---|" * (len(columns) + 1))
    for name, cells in rows.items():
        text = ["-" if k not in cells else f"{100 * cells[k]['accuracy']:.1f}% / {cells[k]['fd']:.2f}"
                for k in columns]
        print(f"| {name} | " + " | ".join(text) + " |")


def report(args) -> None:
    results = read_results(args.results)
    if args.by_name:
        report_by_name(results, args.samples)
        return
    real = [r for r in results if r["name"] == "real data"]
    series: dict[tuple[str, float], dict[int, dict]] = {}
    for r in results:
        if r["name"] != "real data" and (args.samples is None or r["samples"] == args.samples):
            series.setdefault((r["name"], r["cfg"]), {})[r["steps"]] = r
    steps = sorted({s for rows in series.values() for s in rows})
    keys = sorted(series, key=lambda k: (k[0] != "tim", k[0], k[1]))
    head = "| steps | " + " | ".join(f"{n} cfg {c:g}: accuracy / FD" for n, c in keys) + " |"
    print(head)
    print("|" + "---|" * (len(keys) + 1))
    for s in steps:
        cells = []
        for k in keys:
            r = series[k].get(s)
            cells.append("-" if r is None else f"{100 * r['accuracy']:.1f}% / {r['fd']:.2f}")
        print(f"| {s} | " + " | ".join(cells) + " |")
    if real:
        print(f"\nreal data ({real[-1]['samples']} training images): accuracy {100 * real[-1]['accuracy']:.1f}%, "
              f"FD {real[-1]['fd']:.2f}")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
        for (name, cfg) in keys:
            rows = series[(name, cfg)]
            xs = sorted(rows)
            label = {"tim": "TiM", "fm": "flow matching (Euler)"}.get(name, name) + f", guidance {cfg:g}"
            ax.plot(xs, [rows[x]["fd"] for x in xs], marker="o", linestyle="-" if name == "tim" else "--",
                    label=label)
        if real:
            ax.axhline(real[-1]["fd"], color="gray", linewidth=0.8, linestyle=":", label="real training images")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(steps, [str(s) for s in steps])
        ax.set_xlabel("sampling steps (network evaluations per sample without guidance)")
        ax.set_ylabel("Frechet distance of classifier features (lower is better)")
        n = sorted({r["samples"] for rows in series.values() for r in rows.values()})
        ax.set_title(f"Fashion-MNIST, {'/'.join(map(str, n))} samples per point")
        ax.grid(True, which="both", linewidth=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"wrote {args.plot}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="sample and score settings, appending to a JSON-lines file")
    r.add_argument("--out", required=True, help="JSON-lines results file (appended; done settings skipped)")
    r.add_argument("--model", action="append", required=True, help="NAME=PATH.safetensors (repeatable)")
    r.add_argument("--steps", default="1,2,4,8,16,32")
    r.add_argument("--cfg", default="1.0", help="guidance scales, comma-separated")
    r.add_argument("--guidance-high", type=float, default=1.01)
    r.add_argument("--samples", type=int, default=2000)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--real-data", action="store_true", help="also score N real training images (the floor)")
    r.add_argument("--weights", choices=["stored", "float"], default="stored",
                   help="tim sample --weights: 16-bit linear weights kept as stored (default) or widened to float")
    r.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                   help="tim sample --precision: the products with bfloat16 weights")
    r.add_argument("--tim", default=os.path.join(ROOT, "build", "apps", "tim"))
    r.add_argument("--classifier", default=os.path.join(ROOT, "models", "fmnist-classifier.safetensors"))
    r.add_argument("--data-dir", default=None)
    q = sub.add_parser("report", help="markdown table and plot from a results file")
    q.add_argument("--results", required=True)
    q.add_argument("--samples", type=int, default=None, help="only settings with this sample count")
    q.add_argument("--plot", default=None, help="PNG of FD against steps")
    q.add_argument("--by-name", action="store_true",
                   help="one row per name, one column per (guidance, steps) (the weight-types table)")
    args = p.parse_args()
    if args.command == "run" and args.samples % 10 != 0:
        raise SystemExit("--samples must be a multiple of 10 (every class equally often)")
    run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    main()
