"""Model.sample and Model.forward against the `tim` program: the same settings give the same
bytes (the extension is built like the program, and both resolve settings with
tim::resolve_sample_settings). Each case runs `tim sample --out` and compares the file's latents
(and labels, trajectory, times) with Python's output exactly."""

import numpy as np
import pytest

import tim
from conftest import DATA, MODEL, read_safetensors, write_safetensors

# (tim sample arguments, Model.sample keyword arguments): the same run spelled twice.
CASES = {
    "metadata defaults": (["--labels", "0,1,2,3"], dict(labels=[0, 1, 2, 3])),
    "guidance window, seed, first index": (
        ["--labels", "5,7", "--steps", "8", "--cfg-scale", "3", "--guidance-low", "0.1", "--guidance-high", "0.8",
         "--seed", "7", "--first-index", "11"],
        dict(labels=[5, 7], steps=8, cfg_scale=3.0, guidance_low=0.1, guidance_high=0.8, seed=7, first_index=11)),
    "stochastic": (["--labels", "1,1,9", "--stochasticity", "0.4", "--seed", "3", "--steps", "6"],
                   dict(labels=[1, 1, 9], stochasticity=0.4, seed=3, steps=6)),
    "listed schedule": (["--labels", "2", "--schedule", "1,0.7,0.3,0"], dict(labels=[2], schedule=[1, 0.7, 0.3, 0])),
    "shift schedule": (["--labels", "4,6", "--schedule", "shift:3", "--steps", "5"],
                       dict(labels=[4, 6], schedule="shift:3", steps=5)),
    "diffusion mode": (["--labels", "8", "--mode", "diffusion", "--steps", "3"],
                       dict(labels=[8], mode="diffusion", steps=3)),
    "trigflow": (["--labels", "3", "--transport", "trigflow", "--steps", "2"],
                 dict(labels=[3], transport="trigflow", steps=2)),
    "ve noise scale": (["--labels", "0,1", "--transport", "ve", "--steps", "2"],
                       dict(labels=[0, 1], transport="ve", steps=2)),
    "unconditional, no guidance, other size": (
        ["--labels", "10", "--cfg-scale", "1", "--height", "16", "--width", "24"],
        dict(labels=[10], cfg_scale=1.0, height=16, width=24)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sample_equals_the_program(case, model, tim_program, tmp_path):
    arguments, keywords = CASES[case]
    out = tmp_path / "x.safetensors"
    tim_program("sample", "--model", MODEL, *arguments, "--out", out)
    expected, metadata = read_safetensors(out)
    result = model.sample(**keywords)
    assert result.latents.dtype == np.float32 and result.latents.shape == expected["latents"].shape
    assert np.array_equal(result.latents, expected["latents"]), f"largest difference " \
        f"{np.abs(result.latents - expected['latents']).max()}"
    assert np.array_equal(result.labels, expected["labels"])
    assert not result.cancelled and result.steps_done == result.settings["steps"]
    # The same settings, as the program records them in the file's metadata.
    for key, value in result.settings["described"].items():
        assert metadata[key] == value.split(" (")[0], key


def test_trajectory_equals_the_program(model, tim_program, tmp_path):
    out = tmp_path / "x.safetensors"
    tim_program("sample", "--model", MODEL, "--labels", "6,2", "--steps", "3", "--trajectory", "--out", out)
    expected, _ = read_safetensors(out)
    result = model.sample(labels=[6, 2], steps=3, trajectory=True)
    assert result.trajectory.shape == (4, 2, 1, 32, 32)
    assert np.array_equal(result.trajectory.astype(np.float32), expected["trajectory"])
    assert np.array_equal(np.array(result.times), expected["times"])
    assert np.array_equal(result.x.astype(np.float32), result.latents)


def test_given_noise_equals_the_program(model, tim_program, tmp_path):
    z = np.random.default_rng(5).standard_normal((2, 1, 32, 32))
    write_safetensors(tmp_path / "z.safetensors", {"z": z})
    out = tmp_path / "x.safetensors"
    tim_program("sample", "--model", MODEL, "--noise", tmp_path / "z.safetensors", "--labels", "1,2", "--out", out)
    result = model.sample(labels=[1, 2], noise=z)
    assert np.array_equal(result.latents, read_safetensors(out)[0]["latents"])


def test_text_to_image_equals_the_program(tim_program, tmp_path):
    golden, _ = read_safetensors(DATA / "sampler_golden_t2i" / "cfg_window.safetensors")
    cap, null = golden["input.cap_feats"].astype(np.float32), golden["input.null_cap_feats"].astype(np.float32)
    write_safetensors(tmp_path / "captions.safetensors", {"cap_feats": cap, "null_cap_feats": null})
    path = DATA / "sampler_golden_t2i" / "model.safetensors"
    out = tmp_path / "x.safetensors"
    tim_program("sample", "--model", path, "--captions", tmp_path / "captions.safetensors", "--height", "8",
                "--width", "12", "--cfg-scale", "2.5", "--guidance-high", "0.6", "--steps", "4", "--seed", "2",
                "--out", out)
    t2i = tim.load(path)
    assert t2i.kind == "t2i" and t2i.caption_dim == 8
    result = t2i.sample(cap_feats=cap, null_cap_feats=null, height=8, width=12, cfg_scale=2.5, guidance_high=0.6,
                        steps=4, seed=2)
    assert result.labels is None
    assert np.array_equal(result.latents, read_safetensors(out)[0]["latents"])


def test_forward_equals_the_program(model, tim_program, tmp_path):
    rng = np.random.default_rng(9)
    inputs = {"x": rng.uniform(-1, 1, (3, 1, 32, 32)).astype(np.float32),
              "t": np.array([0.9, 0.5, 0.2], np.float32), "r": np.array([0.4, 0.1, 0.0], np.float32),
              "y": np.array([0, 4, 10], np.int64)}
    write_safetensors(tmp_path / "in.safetensors", inputs)
    tim_program("forward", "--model", MODEL, "--inputs", tmp_path / "in.safetensors", "--out", tmp_path / "o.safetensors")
    out = model.forward(inputs["x"], inputs["t"], inputs["r"], labels=inputs["y"])
    assert out.dtype == np.float32 and out.shape == (3, 1, 32, 32)
    assert np.array_equal(out, read_safetensors(tmp_path / "o.safetensors")[0]["out"])


def test_text_to_image_forward_equals_the_program(tim_program, tmp_path):
    path = DATA / "sampler_golden_t2i" / "model.safetensors"
    rng = np.random.default_rng(10)
    inputs = {"x": rng.uniform(-1, 1, (2, 4, 8, 12)).astype(np.float32),
              "t": np.array([0.8, 0.3], np.float32), "r": np.array([0.2, 0.0], np.float32),
              "cap_feats": rng.uniform(-1, 1, (2, 5, 8)).astype(np.float32)}
    write_safetensors(tmp_path / "in.safetensors", inputs)
    tim_program("forward", "--model", path, "--inputs", tmp_path / "in.safetensors", "--out", tmp_path / "o.safetensors")
    out = tim.load(path).forward(inputs["x"], inputs["t"], inputs["r"], cap_feats=inputs["cap_feats"])
    assert np.array_equal(out, read_safetensors(tmp_path / "o.safetensors")[0]["out"])


def test_callable_schedule_is_its_listed_grid(model):
    listed = model.sample(labels=[3], schedule=[1.0, 0.75, 0.5, 0.25, 0.0])
    two = model.sample(labels=[3], steps=4, schedule=lambda i, n: 1.0 - i / n)
    four = model.sample(labels=[3], steps=4, schedule=lambda i, n, t_max, t_min: t_max + (t_min - t_max) * i / n)
    assert listed.times == [1.0, 0.75, 0.5, 0.25, 0.0] == two.times == four.times
    assert np.array_equal(listed.latents, two.latents) and np.array_equal(listed.latents, four.latents)


def test_sample_indices_choose_each_rows_stream(model):
    whole = model.sample(labels=[1, 2, 3, 4], stochasticity=0.3, seed=4)
    # Rows 3 and 1 alone, by their sample indices: the same noise and the same stochastic draws.
    picked = model.sample(labels=[4, 2], stochasticity=0.3, seed=4, sample_indices=[3, 1])
    assert picked.sample_indices == [3, 1]
    assert np.allclose(picked.x, whole.x[[3, 1]], rtol=0, atol=1e-5)
    noise = tim.initial_noise([4, 1, 32, 32], seed=4)
    assert np.array_equal(noise[3], tim.initial_noise([1, 1, 32, 32], seed=4, first_index=3)[0])


def test_batch_size_runs_each_row_with_its_own_stream(model):
    whole = model.sample(labels=[0, 1, 2, 3, 4], seed=1, stochasticity=0.2, trajectory=True)
    parts = model.sample(labels=[0, 1, 2, 3, 4], seed=1, stochasticity=0.2, batch_size=2, trajectory=True)
    assert parts.sample_indices == [0, 1, 2, 3, 4] and parts.latents.shape == whole.latents.shape
    assert parts.trajectory.shape == whole.trajectory.shape
    assert np.array_equal(parts.labels, whole.labels)
    # The same noise per row, and every sample computed on its own (tim::PerSampleNetwork), so
    # the chunks agree with the whole batch bit for bit, trajectory included.
    assert np.array_equal(parts.trajectory, whole.trajectory)
    assert np.array_equal(parts.x, whole.x)


def test_the_grid_of_docs_python_md_equals_the_programs(model, tim_program, tmp_path):
    # docs/python.md's first run: 4 of every class, column k drawing stream k under every class.
    out = tmp_path / "x.safetensors"
    tim_program("sample", "--model", MODEL, "--grid", tmp_path / "grid.png", "--per-class", "4", "--steps", "4",
                "--cfg-scale", "2", "--out", out)
    labels = [c for c in range(model.num_classes) for _ in range(4)]
    result = model.sample(labels=labels, steps=4, cfg_scale=2.0, seed=0,
                          sample_indices=[k for _ in range(model.num_classes) for k in range(4)])
    expected = read_safetensors(out)[0]
    assert np.array_equal(result.labels, expected["labels"])
    assert np.array_equal(result.latents, expected["latents"])
    assert tim.make_grid(tim.to_uint8(result.latents), columns=4).shape == (10 * 34 + 2, 4 * 34 + 2, 1)
