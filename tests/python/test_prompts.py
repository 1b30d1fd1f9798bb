"""Prompts from Python against the `tim` program: tim.TextEncoder.encode equals `tim encode`, and
Model.sample(prompts=...) equals `tim sample --text-encoder DIR --prompt ...` bit for bit, for both
caption batchings, on the tiny Gemma-3 folder of the C++ tests (tests/data/golden_gemma, with its
SentencePiece model) and a random T2I network taking its 32-wide features (written here with the
released parameter names, as tests/random_t2i_checkpoint.hpp writes them)."""

import threading
import time

import numpy as np
import pytest

import tim
from conftest import DATA, read_safetensors, write_safetensors

ENCODER = DATA / "golden_gemma" / "released_pattern"
PROMPTS = ["a red fox in the snow at sunset", "café 🤖", "the lazy dog"]


def random_t2i(path, hidden=16, depth=2, heads=2, patch=1, channels=4, caption_dim=32, adaln_hidden=16, seed=3):
    """A T2I checkpoint with random float32 weights: weights N(0, 1/fan_in), biases N(0, 0.1^2),
    norm gains 1 + N(0, 0.1^2); adaLN fc2 weights halved so the gates stay moderate."""
    rng = np.random.default_rng(seed)
    tensors = {}

    def add(name, shape, mean, std):
        tensors[name] = (mean + std * rng.standard_normal(shape)).astype(np.float32)

    def linear(prefix, fan_in, fan_out, bias=True, gain=1.0):
        add(prefix + ".weight", (fan_out, fan_in), 0.0, gain / np.sqrt(fan_in))
        if bias:
            add(prefix + ".bias", (fan_out,), 0.0, 0.1)

    def norm(prefix, columns):
        add(prefix + ".weight", (columns,), 1.0, 0.1)
        add(prefix + ".bias", (columns,), 0.0, 0.1)

    def swiglu(prefix, fan_in, inner, fan_out, gain=1.0):
        linear(prefix + ".fc1_g", fan_in, inner)
        linear(prefix + ".fc1_x", fan_in, inner)
        linear(prefix + ".fc2", inner, fan_out, True, gain)

    mlp_hidden, head_dim = (int(hidden * 4.0) * 2) // 3, hidden // heads
    add("x_embedder.proj.weight", (hidden, channels, patch, patch), 0.0, 1.0 / np.sqrt(channels * patch * patch))
    add("x_embedder.proj.bias", (hidden,), 0.0, 0.1)
    for embedder in ("t_embedder", "delta_embedder"):
        linear(embedder + ".mlp.0", 256, hidden)
        linear(embedder + ".mlp.2", hidden, hidden)
    norm("y_embedder.norm", caption_dim)
    swiglu("y_embedder.mlp", caption_dim, 4 * hidden, hidden)
    for i in range(depth):
        b = f"blocks.{i}"
        swiglu(b + ".adaLN_modulation", hidden, adaln_hidden, 9 * hidden, 0.5)
        linear(b + ".attn.qkv", hidden, 3 * hidden)
        linear(b + ".attn.qkv_d", hidden, 3 * hidden, False, 0.5)
        norm(b + ".attn.q_norm", head_dim)
        norm(b + ".attn.k_norm", head_dim)
        linear(b + ".attn.proj", hidden, hidden)
        linear(b + ".cross_attn.q", hidden, hidden)
        linear(b + ".cross_attn.kv", hidden, 2 * hidden)
        norm(b + ".cross_attn.q_norm", head_dim)
        norm(b + ".cross_attn.k_norm", head_dim)
        linear(b + ".cross_attn.proj", hidden, hidden)
        swiglu(b + ".mlp", hidden, mlp_hidden, hidden)
    swiglu("final_layer.adaLN_modulation", hidden, hidden // 2, 2 * hidden, 0.5)
    linear("final_layer.linear", hidden, patch * patch * channels)
    write_safetensors(path, tensors, {"num_heads": heads, "new_condition": "t-r"})
    return path


@pytest.fixture(scope="module")
def t2i_path(tmp_path_factory):
    return random_t2i(tmp_path_factory.mktemp("t2i") / "t2i.safetensors")


@pytest.fixture(scope="module")
def encoder():
    return tim.load_text_encoder(ENCODER)


def prompt_arguments(prompts):
    return [a for p in prompts for a in ("--prompt", p)]


def test_encode_equals_tim_encode(encoder, tim_program, tmp_path):
    out = tmp_path / "caps.safetensors"
    tim_program("encode", "--text-encoder", ENCODER, *prompt_arguments(PROMPTS), "--max-length", "8", "--out", out)
    expected, _ = read_safetensors(out)
    with pytest.warns(UserWarning, match="prompt 0 has more than 7 tokens and was truncated"):
        encoded = encoder.encode(PROMPTS, max_length=8)
    assert encoder.hidden_size == 32 and encoder.weight_dtype in ("bfloat16", "float32")
    for name in ("cap_feats", "cap_mask", "input_ids", "null_cap_feats"):
        got = getattr(encoded, name)
        assert got.dtype == expected[name].dtype and np.array_equal(got, expected[name]), name
    assert encoded.lengths == [int(n) for n in expected["cap_mask"].sum(axis=1)]
    assert encoded.truncated == [True, False, False]
    features, mask = encoder.encode(PROMPTS[1:])  # unpacks like diffusers' encode_prompt
    assert features.shape[0] == 2 and mask.shape == features.shape[:2]


def test_encode_is_the_golden_reference(encoder):
    # The independent reference: features the PyTorch Gemma-3 of tools/reference computed for the
    # same prompts (tests/data/golden_gemma; the C++ tests hold tim encode to the same bound).
    golden, _ = read_safetensors(ENCODER / "expected.safetensors")
    with pytest.warns(UserWarning, match="truncated"):
        encoded = encoder.encode(PROMPTS, max_length=8)
    assert np.array_equal(encoded.input_ids, golden["input_ids"])
    reference = golden["last"]
    error = np.linalg.norm(encoded.cap_feats - reference) / np.linalg.norm(reference)
    assert error <= 1e-4


# (tim sample arguments, Model.sample keyword arguments) on top of the prompts and a 4 x 6 latent.
CASES = {
    "per prompt, guided": (["--steps", "2", "--cfg-scale", "2", "--seed", "3"], dict(steps=2, cfg_scale=2.0, seed=3)),
    "per prompt, stochastic, batch size": (
        ["--steps", "3", "--cfg-scale", "2.5", "--stochasticity", "0.3", "--seed", "5", "--batch-size", "2",
         "--first-index", "4"],
        dict(steps=3, cfg_scale=2.5, stochasticity=0.3, seed=5, batch_size=2, first_index=4)),
    "released, one batch": (["--steps", "2", "--cfg-scale", "2", "--seed", "3", "--caption-batching", "released"],
                            dict(steps=2, cfg_scale=2.0, seed=3, caption_batching="released")),
    "released, batch size 2": (
        ["--steps", "2", "--cfg-scale", "2", "--seed", "1", "--caption-batching", "released", "--batch-size", "2"],
        dict(steps=2, cfg_scale=2.0, seed=1, caption_batching="released", batch_size=2)),
    "penultimate, max length": (
        ["--steps", "2", "--cfg-scale", "2", "--hidden-state", "penultimate", "--max-length", "6"],
        dict(steps=2, cfg_scale=2.0, hidden_state="penultimate", max_length=6)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_prompts_equal_the_program(case, t2i_path, encoder, tim_program, tmp_path):
    arguments, keywords = CASES[case]
    out = tmp_path / "x.safetensors"
    tim_program("sample", "--model", t2i_path, "--text-encoder", ENCODER, *prompt_arguments(PROMPTS),
                "--latent-height", "4", "--latent-width", "6", *arguments, "--out", out)
    expected, _ = read_safetensors(out)
    model = tim.load(t2i_path, text_encoder=encoder)
    with _maybe_truncation_warning(keywords):
        result = model.sample(prompts=PROMPTS, height=4, width=6, **keywords)
    assert result.latents.shape == expected["latents"].shape == (3, 4, 4, 6)
    assert np.array_equal(result.latents, expected["latents"]), f"largest difference " \
        f"{np.abs(result.latents - expected['latents']).max()}"
    assert result.labels is None and not result.cancelled


def _maybe_truncation_warning(keywords):
    if keywords.get("max_length", 256) < 12:
        return pytest.warns(UserWarning, match="truncated")
    return _nothing()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_the_batchings_differ_where_the_released_scripts_do(t2i_path, encoder):
    # The comparison above can tell the batchings apart: under `released` the shorter prompts
    # attend to the longest one's padding, so their images change; the longest one's does not.
    model = tim.load(t2i_path, text_encoder=encoder)
    alone = model.sample(prompts=PROMPTS, height=4, width=6, steps=2, cfg_scale=2.0, seed=3)
    batch = model.sample(prompts=PROMPTS, height=4, width=6, steps=2, cfg_scale=2.0, seed=3,
                         caption_batching="released")
    lengths = encoder.encode(PROMPTS).lengths
    longest = int(np.argmax(lengths))
    for b in range(len(PROMPTS)):
        same = np.array_equal(alone.latents[b], batch.latents[b])
        assert same == (lengths[b] == lengths[longest]), b
    # Per prompt is the prompt sampled alone: row 1 by itself, with its sample index. Encoded
    # alone its features come from GEMMs of other sizes (float32 rounding may differ in the last
    # bits), so this is the C++ test's bound (tests/test_cli_text.cpp), not bit equality.
    one = model.sample(prompts=[PROMPTS[1]], height=4, width=6, steps=2, cfg_scale=2.0, seed=3, first_index=1)
    assert np.linalg.norm(one.x[0] - alone.x[1]) <= 1e-5 * np.linalg.norm(alone.x[1])
    # cap_feats with their mask batch as prompts do; without it, as given (the released cut of
    # the whole batch's features, M = the longest prompt).
    encoded = encoder.encode(PROMPTS)
    masked = model.sample(cap_feats=encoded.cap_feats, null_cap_feats=encoded.null_cap_feats,
                          cap_mask=encoded.cap_mask, height=4, width=6, steps=2, cfg_scale=2.0, seed=3)
    assert np.array_equal(masked.latents, alone.latents)
    given = model.sample(cap_feats=encoded.cap_feats, null_cap_feats=encoded.null_cap_feats, height=4, width=6,
                         steps=2, cfg_scale=2.0, seed=3)
    assert np.array_equal(given.latents, batch.latents)


def test_prompt_errors_raise_tims_message(t2i_path, encoder, tmp_path):
    model = tim.load(t2i_path)
    with pytest.raises(tim.Error, match="no text encoder"):
        model.sample(prompts=["a fox"], height=4, width=6)
    with pytest.raises(tim.Error, match="not a folder"):
        tim.load_text_encoder(tmp_path / "nowhere")
    with pytest.raises(tim.Error, match="missing tokenizer.model"):
        tim.load_text_encoder(DATA / "golden_gemma" / "gqa_layer_types")
    with pytest.raises(tim.Error, match="prompt 1 is a int, expected a string"):
        encoder.encode(["a fox", 3])
    with pytest.raises(tim.Error, match="not valid UTF-8"):
        encoder.encode([b"\xff"])
    with pytest.raises(tim.Error, match="not valid UTF-8"):
        encoder.encode(b"\xffabc".decode("utf-8", "surrogateescape"))
    with pytest.raises(tim.Error, match="not valid UTF-8"):
        encoder.encode("\ud800")
    with pytest.raises(tim.Error, match="at least one prompt"):
        encoder.encode([])
    with pytest.raises(tim.Error, match="hidden_state: expected"):
        encoder.encode("a fox", hidden_state="first")
    with pytest.raises(tim.Error, match="max_length must be at least 1"):
        encoder.encode("a fox", max_length=0)
    with pytest.raises(tim.Error, match="does not keep trajectories"):
        model.sample(prompts=PROMPTS, text_encoder=encoder, height=4, width=6, trajectory=True)
    with pytest.raises(tim.Error, match="not both"):
        model.sample(prompts=PROMPTS, text_encoder=encoder, cap_feats=np.zeros((1, 2, 32), np.float32))
    narrow = tim.load(DATA / "sampler_golden_t2i" / "model.safetensors")  # caption_dim 8
    with pytest.raises(tim.Error, match="its hidden size is 32, the model's caption features have cap_dim 8"):
        narrow.sample(prompts=["a fox"], text_encoder=ENCODER)
    with pytest.raises(tim.Error, match="class-conditional"):
        tim.load(DATA.parent.parent / "models" / "tim-fmnist.safetensors", text_encoder=encoder)


def test_a_bad_cap_mask_raises_naming_it(t2i_path, encoder):
    # cap_mask gives every row's token count (its sum): a mask that is not ones then zeros, has
    # values other than 0 and 1, has no token, or is not cap_feats' (B, M) would give counts that
    # do not describe the features, so each is refused before sampling.
    model = tim.load(t2i_path)
    encoded = encoder.encode(PROMPTS)
    feats, null, good = encoded.cap_feats, encoded.null_cap_feats, np.asarray(encoded.cap_mask)
    B, M = good.shape
    assert good.sum(axis=1).min() <= M - 2  # a row with two zeros, for the hole made below

    def sample(mask, cap_feats=feats):
        return model.sample(cap_feats=cap_feats, null_cap_feats=null, cap_mask=mask, height=4, width=6, steps=1)

    sample(good)  # the mask as encoded is accepted
    hole = good.copy()
    row = int(np.argmin(good.sum(axis=1)))
    hole[row, -1] = 1  # a 1 after the row's zeros
    with pytest.raises(tim.Error, match=f"cap_mask: row {row} is not ones then zeros"):
        sample(hole)
    two = good.copy()
    two[0, 0] = 2
    with pytest.raises(tim.Error, match=r"cap_mask: expected only 0 and 1, got 2 at \(0, 0\)"):
        sample(two)
    negative = good.copy()
    negative[1, -1] = -1
    with pytest.raises(tim.Error, match="cap_mask: expected only 0 and 1, got -1"):
        sample(negative)
    empty = good.copy()
    empty[2] = 0
    with pytest.raises(tim.Error, match="cap_mask: row 2 does not start with 1"):
        sample(empty)
    with pytest.raises(tim.Error, match=r"cap_mask: shape \(3, 2\) does not match cap_feats' \(B, M\)"):
        sample(good[:, :2])
    with pytest.raises(tim.Error, match="cap_mask: shape"):
        sample(good[:2])
    with pytest.raises(tim.Error, match=r"cap_mask: expected shape \(B, M\)"):
        sample(good[0])
    with pytest.raises(tim.Error, match="cap_mask: expected integers"):
        sample(good.astype(np.float32))
    with pytest.raises(tim.Error, match="cap_mask: given without cap_feats"):
        model.sample(cap_mask=good, height=4, width=6, steps=1)


def test_encoding_releases_the_gil(encoder):
    # A thread that wakes every millisecond records when it runs; while encode holds the GIL it
    # could not, and the gap between two of its wake-ups would span the whole call. To tell, the
    # call must be long against the wake-ups (0.2 s): its prompts are doubled until it is, so a
    # fast machine makes a bigger call rather than a failure.
    prompt = " ".join(["fox snow sunset lazy dog café"] * 40)  # truncated: a UserWarning
    stamps, done = [], threading.Event()

    def tick():
        while not done.is_set():
            stamps.append(time.perf_counter())
            time.sleep(0.001)

    thread = threading.Thread(target=tick)
    thread.start()
    try:
        time.sleep(0.05)
        count = 16
        while True:
            begin = time.perf_counter()
            with pytest.warns(UserWarning):
                encoder.encode([prompt] * count)
            end = time.perf_counter()
            if end - begin >= 0.2:
                break
            if count >= 16384:
                pytest.skip(f"{count} prompts encode in {end - begin:.3f} s, too short to tell")
            count *= 2
    finally:
        done.set()
        thread.join()
    during = [s for s in stamps if begin <= s <= end]
    assert len(during) >= 2
    gaps = np.diff([begin, *during, end])
    assert gaps.max() < (end - begin) / 2, f"largest gap {gaps.max():.3f} s of a {end - begin:.3f} s call"


def test_on_step_sees_every_group_and_stops_them_all(t2i_path, encoder):
    model = tim.load(t2i_path, text_encoder=encoder)
    groups = len(set(encoder.encode(PROMPTS).lengths))
    assert groups >= 2  # per prompt runs one sampler per token count
    seen = []
    full = model.sample(prompts=PROMPTS, height=4, width=6, steps=3, on_step=lambda info: seen.append(info.step))
    assert seen == [0, 1, 2] * groups and not full.cancelled
    seen.clear()
    stopped = model.sample(prompts=PROMPTS, height=4, width=6, steps=3,
                           on_step=lambda info: seen.append(info.step) or False)
    assert seen == [0] and stopped.cancelled  # the later groups are not run
