"""No reference leaks: 1,000 calls of every entry point (prompts: the text encoder inside sample)
keep the process's memory flat, and nanobind finds no leaked instance, type or function when the
interpreter exits."""

import subprocess
import sys
import textwrap

from conftest import DATA

SCRIPT = textwrap.dedent(f"""
    import numpy as np
    import tim

    def rss_kib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4  # resident pages of 4 KiB

    # The small networks of the sampler's golden tests: the binding's cost, not the network's.
    c2i = tim.load({str(DATA / "sampler_golden" / "model.safetensors")!r})
    t2i = tim.load({str(DATA / "sampler_golden_t2i" / "model.safetensors")!r})
    noise = tim.initial_noise([2, 4, 8, 8], seed=1)
    x = np.zeros((2, 4, 8, 8), np.float32)
    cap = np.ones((2, 5, 8), np.float32)
    null = np.zeros((1, 5, 8), np.float32)
    # Prompts: the tiny Gemma-3 folder of the C++ tests (32-wide features) and a T2I network
    # taking them (test_prompts.py writes it).
    import sys
    sys.path.insert(0, {str(DATA.parent / "python")!r})
    from test_prompts import random_t2i
    import pathlib, shutil, tempfile
    folder = tempfile.mkdtemp()
    encoder = tim.load_text_encoder({str(DATA / "golden_gemma" / "released_pattern")!r})
    prompted = tim.load(random_t2i(pathlib.Path(folder) / "t2i.safetensors"), text_encoder=encoder)

    def calls():
        out = c2i.sample(labels=[1, 2], steps=1, noise=noise, trajectory=True,
                         on_step=lambda info: info.x is not None)
        c2i.sample(labels=[1, 2], steps=2, height=8, width=8, cfg_scale=2.0, batch_size=1)
        t2i.sample(cap_feats=cap, null_cap_feats=null, steps=1, height=8, width=8, cfg_scale=2.0)
        c2i.forward(x, 0.5, 0.25, labels=[0, 5])
        t2i.forward(x, 0.5, 0.25, cap_feats=cap)
        tim.to_uint8(out.latents[:, :3])
        tim.initial_noise([2, 4, 8, 8])
        prompted.sample(prompts=["a red fox", "the lazy dog in the snow"], steps=1, height=2, width=2, cfg_scale=2.0)
        try:
            encoder.encode([b"\\xff"])
        except tim.Error:
            pass
        try:
            c2i.sample(labels=[99], steps=1, height=8, width=8)
        except tim.Error:
            pass

    for _ in range(100):  # warm up: workspaces, allocator pools
        calls()
    before = rss_kib()
    for _ in range(1000):
        calls()
    print("growth_kib", rss_kib() - before)
    shutil.rmtree(folder)
""")


def test_a_thousand_calls_keep_memory_flat():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    growth = int(result.stdout.split("growth_kib")[1])
    # Keeping one returned array per round (with its NumPy object, capsule and tim tensor) shows
    # up well above the bound: 4.8 MiB for out.latents (2 KiB of data), 1.4 MiB even for
    # out.labels (16 bytes), measured by adding `keep.append(...)` to calls(). Without a leak the
    # growth is a few KiB of allocator noise.
    assert growth < 1024, f"memory grew by {growth} KiB over 1,000 calls"
    assert "leaked" not in result.stderr, result.stderr  # nanobind's exit-time leak report
