"""The package's interface: DLPack tensors in and out, clear exceptions for bad arguments, the
per-step callback (cancellation, errors, Ctrl-C), and the typing stub."""

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import tim
from conftest import MODEL, REPO



def test_numpy_dlpack_round_trip(model):
    out = model.sample(labels=[1, 2])
    # Out: a NumPy array other frameworks can take without a copy.
    again = np.from_dlpack(out.latents)
    assert np.shares_memory(again, out.latents)
    # In: an object that only speaks DLPack is read through it.
    class OnlyDlpack:
        def __init__(self, array):
            self.array = array

        def __dlpack__(self, **kwargs):
            return self.array.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self.array.__dlpack_device__()

    labels = OnlyDlpack(np.array([1, 2], np.int64))
    noise = OnlyDlpack(tim.initial_noise([2, 1, 32, 32]))
    assert np.array_equal(model.sample(labels=labels, noise=noise).latents, out.latents)


def test_torch_tensors_in_and_out(model):
    torch = pytest.importorskip("torch")
    out = model.sample(labels=torch.tensor([3, 4]), noise=torch.from_numpy(tim.initial_noise([2, 1, 32, 32])))
    assert np.array_equal(out.latents, model.sample(labels=[3, 4]).latents)
    latents = torch.from_dlpack(out.latents)
    assert latents.data_ptr() == out.latents.ctypes.data  # shared, not copied
    x = torch.zeros(2, 1, 32, 32)
    forward = model.forward(x, torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.2]), labels=torch.tensor([0, 1]))
    assert np.array_equal(forward, model.forward(np.zeros((2, 1, 32, 32), np.float32), 0.5, 0.2, labels=[0, 1]))
    with pytest.raises(tim.Error, match="labels: expected integers"):
        model.sample(labels=torch.tensor([1.0]))


@pytest.mark.parametrize("keywords, message", [
    (dict(labels=[11]), r"labels: label 11 at index 0 is outside \[0, 10\]"),
    (dict(labels=[-1, 2]), r"label -1 at index 0 is outside"),
    (dict(labels=[1.5]), r"labels: expected integers"),
    (dict(labels=[]), r"labels: expected shape \(B\) with B >= 1"),
    (dict(), r"labels: a class-conditional model needs labels"),
    (dict(labels=[1], steps=0), r"steps must be at least 1, got 0"),
    (dict(labels=[1], schedule="cosine"), r"schedule: unknown schedule 'cosine'"),
    (dict(labels=[1], schedule=[1.0, 0.5, 0.7]), r"schedule: time grid: times must be strictly decreasing"),
    (dict(labels=[1], transport="flow"), r"transport: unknown transport 'flow'"),
    (dict(labels=[1], mode="jump"), r"mode: "),
    (dict(labels=[1], guidance_low=0.8, guidance_high=0.2), r"guidance_low 0.8 is greater than guidance_high 0.2"),
    (dict(labels=[1], transport="edm", stochasticity=0.5), r"stochasticity 0.5 needs the ot-fm transport"),
    (dict(labels=[1], height=30), r"height 30 and width 32 must be multiples of the model's patch size 4"),
    (dict(labels=[1, 2], noise=np.zeros((3, 1, 32, 32))), r"noise: expected shape \(2, 1, H, W\)"),
    (dict(labels=[1], sample_indices=[1, 2]), r"sample_indices: 2 entries for a batch of 1"),
    (dict(labels=[1], cap_feats=np.zeros((1, 2, 8), np.float32)), r"is a class-conditional \(C2I\) TiM"),
    (dict(labels=[1], batch_size=0), r"batch_size must be at least 1"),
    # With batch_size the chunks see slices: the whole batch is checked first, with the same message.
    (dict(labels=[1, 2, 3], sample_indices=[0, 1, 2, 3], batch_size=2), r"sample_indices: 4 entries for a batch of 3"),
    (dict(labels=[1, 2, 3], sample_indices=[0, 1], batch_size=2), r"sample_indices: 2 entries for a batch of 3"),
    (dict(labels=[1, 2, 3], noise=np.zeros((4, 1, 32, 32)), batch_size=2), r"noise: expected shape \(3, 1, H, W\)"),
    (dict(labels=[1, 2, 3], noise=np.zeros((2, 1, 32, 32)), batch_size=2), r"noise: expected shape \(3, 1, H, W\)"),
    (dict(prompts=["a cat"]), r"prompts: .* is a class-conditional \(C2I\) TiM"),
    (dict(labels=[1], caption_batching="grouped"), r"caption_batching: expected 'per-prompt' or 'released'"),
])
def test_bad_arguments_raise_tims_message(model, keywords, message):
    with pytest.raises(tim.Error, match=message):
        model.sample(**keywords)


def test_bad_files_and_devices_raise(tmp_path):
    with pytest.raises(tim.Error, match="missing.safetensors"):
        tim.load(tmp_path / "missing.safetensors")
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04" + bytes(100))  # a PyTorch zip checkpoint
    with pytest.raises(tim.Error, match="PyTorch"):
        tim.load(tmp_path / "model.pt")
    with pytest.raises(tim.Error, match="device 'cuda'"):
        tim.load(MODEL, device="cuda")
    with pytest.raises(tim.Error, match="dtype 'bfloat16'"):
        tim.load(MODEL, dtype="bfloat16")
    assert issubclass(tim.Error, ValueError)


def test_forward_checks_its_inputs(model):
    with pytest.raises(tim.Error, match="input 'y'"):
        model.forward(np.zeros((2, 1, 32, 32)), 0.5, 0.2, labels=[1])
    with pytest.raises(tim.Error, match="takes labels"):
        model.forward(np.zeros((1, 1, 32, 32)), 0.5, 0.2)


def test_callback_sees_every_step_and_cancels(model):
    full = model.sample(labels=[1, 5], steps=6, cfg_scale=2.0, guidance_high=1.0, trajectory=True)
    seen = []

    def on_step(info):
        seen.append((info.step, info.steps, info.t, info.r, info.guided, info.x.copy()))
        return info.step < 2  # stop after step 2

    stopped = model.sample(labels=[1, 5], steps=6, cfg_scale=2.0, guidance_high=1.0, on_step=on_step)
    assert stopped.cancelled and stopped.steps_done == 3
    assert [s[0] for s in seen] == [0, 1, 2] and all(s[1] == 6 for s in seen)
    assert [(s[2], s[3]) for s in seen] == list(zip(full.times[:3], full.times[1:4]))
    assert seen[0][4] is False and seen[1][4] is True  # t = t_max is outside [0, 1) t_max (SPEC 6)
    for step, *_, x in seen:
        assert np.array_equal(x, full.trajectory[step + 1])
    assert np.array_equal(stopped.x, full.trajectory[3])
    # None or True continue.
    assert not model.sample(labels=[1], steps=2, on_step=lambda info: None).cancelled


def test_cancelling_a_chunked_run_keeps_the_output_consistent(model):
    labels = [0, 1, 2, 3]
    full = model.sample(labels=labels, steps=3, seed=2, trajectory=True)
    calls = []

    def stop_at(call):
        def on_step(info):
            calls.append(info.step)
            return len(calls) < call
        return on_step

    # Cancelled at the first step of the second chunk: rows 0-1 ran 3 steps, rows 2-3 one.
    late = model.sample(labels=labels, steps=3, seed=2, batch_size=2, trajectory=True, on_step=stop_at(4))
    assert calls == [0, 1, 2, 0]
    assert late.cancelled and late.steps_done == 1 and late.latents.shape == full.latents.shape
    assert np.array_equal(late.x[:2], full.x[:2])
    assert np.array_equal(late.x[2:], full.trajectory[1][2:])
    assert late.trajectory is None  # no (K + 1, B, ...) array holds rows stopped at 3 and 1 steps
    # Cancelled inside the first chunk: only its rows, with their trajectory.
    calls.clear()
    early = model.sample(labels=labels, steps=3, seed=2, batch_size=2, trajectory=True, on_step=stop_at(2))
    assert early.cancelled and early.steps_done == 2 and early.x.shape[0] == 2
    assert early.trajectory.shape == (3, *early.x.shape)
    assert np.array_equal(early.trajectory, full.trajectory[:3, :2])
    assert np.array_equal(early.x, full.trajectory[2][:2])


def test_callback_errors_stop_the_run_and_propagate(model):
    kept = []

    def failing(info):
        kept.append(info)
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        model.sample(labels=[1], steps=4, on_step=failing)
    assert len(kept) == 1
    with pytest.raises(tim.Error, match="only readable during the callback"):
        kept[0].x
    with pytest.raises(TypeError, match="on_step must return None, True or False"):
        model.sample(labels=[1], steps=2, on_step=lambda info: "yes")


def test_ctrl_c_stops_at_the_next_step(model):
    # The rate of this machine, then a run ~100x as long, interrupted after a fraction of it by
    # SIGINT from another thread: the sampler, running with the GIL released, checks for it
    # after every step (PyErr_CheckSignals) and raises KeyboardInterrupt.
    start = time.perf_counter()
    model.sample(labels=[1], steps=20)
    per_step = (time.perf_counter() - start) / 20
    steps = max(2000, int(20.0 / per_step))  # about 20 s uninterrupted
    timer = threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT))
    start = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        model.sample(labels=[1], steps=steps)
    elapsed = time.perf_counter() - start
    timer.join()
    assert elapsed < 5.0, f"the run went on for {elapsed:.1f} s after the interrupt"


def test_threads_share_a_model_safely(model):
    expected = model.sample(labels=[2, 3], steps=3).latents
    results = [None] * 4

    def work(i):
        results[i] = model.sample(labels=[2, 3], steps=3).latents

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, expected) for r in results)


def test_settings_resolution_reports_sources(model):
    s = model.resolve_settings(steps=6)
    assert s["steps"] == 6 and s["described"]["steps"] == "6 (steps)"
    assert s["cfg_scale"] == 2.0 and s["described"]["cfg_scale"] == "2 (metadata 'sample_cfg_scale')"
    assert s["described"]["stochasticity"] == "0 (default)"
    assert s["times"] == [1.0, 5 / 6, 2 / 3, 0.5, 1 / 3, 1 / 6, 0.0] or np.allclose(s["times"], np.linspace(1, 0, 7))
    grid = model.resolve_settings(schedule=lambda i, n: 1 - i / n)
    assert grid["steps"] == 4 and grid["schedule"] == "1,0.75,0.5,0.25,0"


def test_the_typing_stub_is_installed():
    stub = Path(tim.__file__).with_name("_tim.pyi")
    text = stub.read_text()
    for name in ("class StepInfo", "class NativeModel", "def sample(", "def to_uint8(", "def initial_noise("):
        assert name in text
    assert (Path(tim.__file__).with_name("py.typed")).is_file()


def test_thread_count_is_settable():
    before = tim.num_threads()
    assert before >= 1
    tim.set_num_threads(1)
    assert tim.num_threads() == 1
    with pytest.raises(tim.Error, match="thread count must be >= 1"):
        tim.set_num_threads(0)
    tim.set_num_threads(before)


def in_a_new_thread(function):
    """What function() returns when called on a new Python thread."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", function()))
    thread.start()
    thread.join()
    return result["value"]


def test_thread_count_holds_in_every_python_thread(model):
    before = tim.num_threads()
    # OpenMP's own count on a thread that has not computed yet: the setting must differ from it,
    # so that a count left per thread (omp_set_num_threads alone) shows.
    openmp_default = in_a_new_thread(tim._tim._openmp_max_threads)
    want = openmp_default + 1
    try:
        in_a_new_thread(lambda: tim.set_num_threads(want))
        assert tim.num_threads() == want
        assert in_a_new_thread(tim.num_threads) == want

        # A run started from yet another thread computes with it: OpenMP's count on that thread
        # during the run (the callback runs on it) is the package's.
        def run():
            seen = []
            model.sample(labels=[1], steps=2, on_step=lambda info: seen.append(tim._tim._openmp_max_threads()))
            return seen

        assert in_a_new_thread(run) == [want, want]
    finally:
        tim.set_num_threads(before)
