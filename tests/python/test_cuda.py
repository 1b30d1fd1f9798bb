"""device='cuda' (docs/python.md, "CUDA (compiled, not run)"). Where the package cannot run on a
GPU, loading on cuda raises tim.Error saying why. The comparisons need a visible GPU and report
themselves skipped, by name, where there is none: no GPU has run them yet."""

import numpy as np
import pytest

import tim
from conftest import DATA, MODEL, read_safetensors, write_safetensors



def needs_gpu(name):
    """Skips test `name` where no GPU can run it, saying so by name."""
    why = "sees no CUDA device" if tim._tim.cuda_built else "was built without CUDA"
    return pytest.mark.skipif(not tim.cuda_available(), reason=f"{name} needs a CUDA GPU; this package {why}")


def test_cuda_without_a_gpu_says_why():
    if tim.cuda_available():
        pytest.skip("test_cuda_without_a_gpu_says_why: a GPU is visible here")
    reason = "no CUDA device is visible" if tim._tim.cuda_built else "built without CUDA"
    with pytest.raises(tim.Error, match=reason):
        tim.load(MODEL, device="cuda")
    with pytest.raises(tim.Error, match="device 'tpu': expected 'cpu' or 'cuda'"):
        tim.load(MODEL, device="tpu")


@needs_gpu("test_cuda_sample_is_close_to_the_cpu")
def test_cuda_sample_is_close_to_the_cpu():
    # The same float32 network on both backends (no TF32): they differ by the order of float sums,
    # a few ulp per operation; tests/cuda/test_cuda_network.cu bounds a 4-step T2I run by 1e-5
    # relative, docs/cuda.md measured 1.9e-6 for 4 guided stochastic steps of the shipped model.
    keywords = dict(labels=[0, 3, 7, 10], steps=4, cfg_scale=2.0, stochasticity=0.3, seed=2)
    cpu = tim.load(MODEL).sample(**keywords)
    gpu_model = tim.load(MODEL, device="cuda")
    assert gpu_model.device.endswith("float32") and gpu_model.device != "cpu, float32"
    gpu = gpu_model.sample(**keywords)
    error = np.linalg.norm(gpu.x - cpu.x) / np.linalg.norm(cpu.x)
    assert error <= 1e-5, error


@needs_gpu("test_cuda_text_to_image_equals_the_program")
def test_cuda_text_to_image_equals_the_program(tim_program, tmp_path):
    # Python on cuda runs the program's CudaModel on the same batch: the same bits as tim sample
    # --device cuda (the tim program must be built with CUDA too).
    golden, _ = read_safetensors(DATA / "sampler_golden_t2i" / "cfg_window.safetensors")
    cap, null = golden["input.cap_feats"].astype(np.float32), golden["input.null_cap_feats"].astype(np.float32)
    write_safetensors(tmp_path / "captions.safetensors", {"cap_feats": cap, "null_cap_feats": null})
    path = DATA / "sampler_golden_t2i" / "model.safetensors"
    out = tmp_path / "x.safetensors"
    tim_program("sample", "--model", path, "--device", "cuda", "--captions", tmp_path / "captions.safetensors",
                "--height", "8", "--width", "12", "--cfg-scale", "2.5", "--steps", "4", "--seed", "2", "--out", out)
    result = tim.load(path, device="cuda").sample(cap_feats=cap, null_cap_feats=null, height=8, width=12,
                                                  cfg_scale=2.5, steps=4, seed=2)
    assert np.array_equal(result.latents, read_safetensors(out)[0]["latents"])
