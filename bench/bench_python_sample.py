"""The Python entry point against the C++ one on the same sampling run (docs/performance.md,
"Python package"): `tim sample -v` reports the seconds of its sampling (after loading, before
writing); Python times a whole Model.sample call (settings resolution, noise, sampling, the
float32 cast) on a freshly loaded model, as the program samples right after loading. Runs
alternate, so both see the same machine; the medians and their ratio are printed, and the two
outputs are checked to be equal bit for bit.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE \\
        python bench/bench_python_sample.py --program build/apps/tim --runs 11

(the Python package installed with `pip install .`; the program built by scripts/build.sh, both
with tim::blas and without -march=native.)
"""

import argparse
import json
import re
import statistics
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import tim

REPO = Path(__file__).resolve().parents[1]


def latents_of(path):
    data = Path(path).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    info = json.loads(data[8:8 + length])["latents"]
    begin, end = info["data_offsets"]
    return np.frombuffer(data[8 + length + begin:8 + length + end], np.float32).reshape(info["shape"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--program", default=str(REPO / "build" / "apps" / "tim"))
    parser.add_argument("--model", default=str(REPO / "models" / "tim-fmnist.safetensors"))
    parser.add_argument("--num", type=int, default=16, help="samples (of class 3)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cfg-scale", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()

    tim.set_num_threads(args.threads)
    keywords = dict(labels=[3] * args.num, steps=args.steps, cfg_scale=args.cfg_scale)
    command = [args.program, "sample", "--model", args.model, "--class", "3", "--num", str(args.num), "--steps",
               str(args.steps), "--cfg-scale", str(args.cfg_scale), "--threads", str(args.threads), "-v"]
    cpp, python = [], []
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "x.safetensors"
        for run in range(args.runs + 1):  # the first pair warms the page cache and is not counted
            report = subprocess.run(command + ["--out", str(out)], capture_output=True, text=True, check=True).stderr
            seconds = float(re.search(r"steps in \d+ chunks? on .*? in ([0-9.]+) s", report).group(1))
            model = tim.load(args.model)
            start = time.perf_counter()
            result = model.sample(**keywords)
            elapsed = time.perf_counter() - start
            if run == 0:
                assert np.array_equal(result.latents, latents_of(out)), "Python and the program disagree"
                continue
            cpp.append(seconds)
            python.append(elapsed)
    c, p = statistics.median(cpp), statistics.median(python)
    print(f"{args.num} samples, {args.steps} steps, cfg {args.cfg_scale}, {args.threads} thread(s), "
          f"{args.runs} runs each, alternating; GEMMs: {tim._tim.gemm}")
    print(f"C++  (tim sample, sampling only): median {c:.3f} s  (min {min(cpp):.3f}, max {max(cpp):.3f})")
    print(f"Python (Model.sample, whole call): median {p:.3f} s  (min {min(python):.3f}, max {max(python):.3f})")
    print(f"Python / C++: {p / c:.4f}")


if __name__ == "__main__":
    main()
