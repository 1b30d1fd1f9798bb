"""tim: Transition Models (TiM) from Python, on tim's C++ library (docs/python.md).

    import tim
    model = tim.load("models/tim-fmnist.safetensors")
    out = model.sample(labels=[0, 1, 2], steps=4, cfg_scale=2.0, seed=0)
    out.latents          # (3, 1, 32, 32) float32, equal to `tim sample --out` bit for bit
    tim.to_uint8(out.latents)   # (3, 32, 32, 1) uint8 images

    t2i = tim.load("t2i.safetensors", text_encoder="gemma-3-1b-it")
    out = t2i.sample(prompts=["a red fox in the snow"], height=32, width=32, cfg_scale=2.5)

Settings not given come from the checkpoint's metadata, else tim's defaults, resolved by the same
library function as the `tim` program (tim::resolve_sample_settings). Arrays are NumPy arrays;
any DLPack tensor (PyTorch, JAX, CuPy on the host) is accepted as input. The GIL is released
while tim computes; Ctrl-C stops a sampling run at the next step. tim's errors raise tim.Error
(a ValueError) with tim's message.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from . import _tim
from ._tim import Error, StepInfo, initial_noise, num_threads, set_num_threads, to_uint8

__version__ = _tim.__version__

__all__ = [
    "Decoder",
    "EncodedPrompts",
    "Error",
    "Model",
    "SampleOutput",
    "StepInfo",
    "TextEncoder",
    "cuda_available",
    "initial_noise",
    "load",
    "load_decoder",
    "load_text_encoder",
    "make_grid",
    "num_threads",
    "set_num_threads",
    "to_uint8",
]

ArrayLike = Any  # a NumPy array, a DLPack tensor (torch.Tensor on the CPU, jax.Array), or a list
Schedule = Union[str, Sequence[float], Callable[..., float]]


def _as_array(value: ArrayLike, dtype: Any, name: str) -> np.ndarray:
    """`value` as a C-contiguous NumPy array of `dtype`, without a copy where it already is one.

    DLPack tensors are read through np.from_dlpack (shared memory). Integers are required for
    integer arrays (labels); floating arrays accept any real floating or integer input.
    """
    if not isinstance(value, np.ndarray) and hasattr(value, "__dlpack__"):
        try:
            value = np.from_dlpack(value)
        except (TypeError, RuntimeError, BufferError, ValueError) as e:
            raise Error(f"{name}: cannot read this tensor through DLPack ({e}); pass a CPU tensor or a NumPy array") from e
    array = np.asarray(value)
    want = np.dtype(dtype)
    if want.kind == "i":
        if array.size and array.dtype.kind not in "iu":
            raise Error(f"{name}: expected integers, got an array of {array.dtype}")
    elif array.dtype.kind not in "fiu":
        raise Error(f"{name}: expected real numbers, got an array of {array.dtype}")
    return np.ascontiguousarray(array, dtype=want)


def _schedule_text(schedule: Any) -> Optional[str]:
    """A schedule given as a name or a list of times, in the spelling tim parses ("1.0,0.5,0.0")."""
    if schedule is None or isinstance(schedule, str):
        return schedule
    times = [float(t) for t in schedule]
    return ",".join(repr(t) for t in times)  # repr: the shortest decimal that reads back exactly


def _call_schedule(function: Callable[..., float], steps: int, t_max: float, t_min: float) -> list:
    """t_i = function(i, N) or function(i, N, t_max, t_min) for i = 0..N (tim::function_schedule)."""
    try:
        inspect.signature(function).bind(0, steps, t_max, t_min)
        with_range = True
    except TypeError:
        with_range = False
    except ValueError:  # no signature (a builtin): try (i, N)
        with_range = False
    return [float(function(i, steps, t_max, t_min) if with_range else function(i, steps)) for i in range(steps + 1)]


@dataclass
class SampleOutput:
    """What Model.sample returns. Arrays are NumPy arrays in host memory."""

    latents: np.ndarray  # (B, C, H, W) float32: x cast to float, what `tim sample --out` stores
    x: np.ndarray  # (B, C, H, W) float64: the sampler's state
    labels: Optional[np.ndarray]  # (B) int64 for a class-conditional model, None for text-to-image
    sample_indices: list  # each row's noise stream
    times: list  # the time grid t_0 .. t_N
    steps_done: int  # N unless cancelled (with batch_size: of the last chunk run; earlier chunks ran N)
    cancelled: bool  # on_step returned False before the last step
    settings: dict  # the resolved settings; settings["described"]: value and source of each
    # (K + 1, B, C, H, W) float64 when trajectory=True; None when a batch_size run was cancelled
    # after its first chunk (its chunks then stopped after different numbers of steps)
    trajectory: Optional[np.ndarray] = None


def _mask_lengths(cap_mask, cap_feats) -> list:
    """The captions' token counts from `cap_mask` (B, M): every row ones then zeros (the real
    tokens first, BOS included, then padding) with at least one 1, of cap_feats' (B, M)."""
    if cap_feats is None:
        raise Error("cap_mask: given without cap_feats")
    raw = _as_array(cap_mask, np.int64, "cap_mask")
    if raw.ndim != 2:
        raise Error(f"cap_mask: expected shape (B, M), got {raw.shape}")
    feats_shape = np.shape(cap_feats)
    if tuple(raw.shape) != tuple(feats_shape[:2]):
        raise Error(f"cap_mask: shape {raw.shape} does not match cap_feats' (B, M) = {tuple(feats_shape[:2])}")
    if not np.all((raw == 0) | (raw == 1)):
        bad = tuple(int(i) for i in np.argwhere((raw != 0) & (raw != 1))[0])
        raise Error(f"cap_mask: expected only 0 and 1, got {int(raw[bad])} at {bad}")
    for b, row in enumerate(raw):
        if row.size == 0 or row[0] != 1:
            raise Error(f"cap_mask: row {b} does not start with 1; every caption has at least one token (BOS)")
        if np.any(np.diff(row) > 0):
            raise Error(f"cap_mask: row {b} is not ones then zeros (a 1 after a 0 at column "
                        f"{int(np.argmax(np.diff(row) > 0)) + 1})")
    return [int(n) for n in raw.sum(axis=1)]


class Model:
    """A TiM checkpoint loaded on the CPU in float32, or with device='cuda' on the GPU
    (class-conditional C2I or text-to-image T2I).

    Use tim.load(path). One computation at a time per model: threads sharing a model wait for
    each other (forward runs the model's one network and its workspace; sample runs its own copies
    but already uses every thread of tim.num_threads(), so runs side by side would only share the
    same cores).
    """

    def __init__(self, native: Any, text_encoder: Optional["TextEncoder"] = None):
        self._native = native
        self.text_encoder = text_encoder  # what sample(prompts=...) encodes with (T2I)

    @property
    def path(self) -> str:
        return self._native.path

    @property
    def device(self) -> str:
        """Where the model computes: 'cpu, float32', or the GPU and its precision."""
        return self._native.device

    @property
    def kind(self) -> str:
        """'c2i' (class-conditional) or 't2i' (text-to-image)."""
        return "t2i" if self._native.text_to_image else "c2i"

    @property
    def config(self) -> dict:
        """The network's configuration (from shapes and metadata)."""
        return self._native.config

    @property
    def metadata(self) -> dict:
        """The checkpoint's __metadata__ (strings)."""
        return self._native.metadata

    @property
    def num_classes(self) -> int:
        """Classes of a C2I model (labels 0..num_classes-1; num_classes is the null class); 0 for T2I."""
        return self._native.num_classes

    @property
    def caption_dim(self) -> int:
        """Width of a T2I model's caption features; 0 for C2I."""
        return self._native.caption_dim

    @property
    def parameter_count(self) -> int:
        return self._native.parameter_count

    def describe(self) -> str:
        return self._native.describe()

    def __repr__(self) -> str:
        return f"tim.Model({self.path!r}: {self.describe()})"

    def forward(self, x: ArrayLike, t: ArrayLike, r: ArrayLike, labels: ArrayLike = None,
                cap_feats: ArrayLike = None) -> np.ndarray:
        """One network evaluation: F (B, C_out, H, W) float32 from x (B, C, H, W), the network
        time inputs t and r (after the transport's c_noise; arrays (B) or numbers), and labels
        (B) (C2I) or caption features cap_feats (B, M, caption_dim) (T2I). `tim forward` computes
        the same."""
        x = _as_array(x, np.float32, "x")
        batch = x.shape[0] if x.ndim else 0
        t = _as_array(np.full(batch, t) if np.ndim(t) == 0 else t, np.float32, "t")
        r = _as_array(np.full(batch, r) if np.ndim(r) == 0 else r, np.float32, "r")
        return self._native.forward(
            x, t, r,
            None if labels is None else _as_array(labels, np.int64, "labels"),
            None if cap_feats is None else _as_array(cap_feats, np.float32, "cap_feats"))

    def resolve_settings(self, *, steps: Optional[int] = None, cfg_scale: Optional[float] = None,
                         guidance_low: Optional[float] = None, guidance_high: Optional[float] = None,
                         stochasticity: Optional[float] = None, transport: Optional[str] = None,
                         t_max: Optional[float] = None, t_min: Optional[float] = None,
                         schedule: Optional[Schedule] = None, mode: Optional[str] = None,
                         height: Optional[int] = None, width: Optional[int] = None) -> dict:
        """The settings a sample() call with these arguments runs with: each the argument, else
        the checkpoint's metadata, else tim's default (tim::resolve_sample_settings)."""
        if callable(schedule):
            base = self._native.resolve(steps, cfg_scale, guidance_low, guidance_high, stochasticity, transport,
                                        t_max, t_min, None, mode, height, width)
            schedule = _call_schedule(schedule, base["steps"], base["t_max"], base["t_min"])
        return self._native.resolve(steps, cfg_scale, guidance_low, guidance_high, stochasticity, transport,
                                    t_max, t_min, _schedule_text(schedule), mode, height, width)

    def sample(self, labels: ArrayLike = None, *, cap_feats: ArrayLike = None, null_cap_feats: ArrayLike = None,
               cap_mask: ArrayLike = None, prompts: Union[str, Sequence[str], None] = None,
               text_encoder: Union["TextEncoder", str, None] = None, caption_batching: str = "per-prompt",
               max_length: int = 256, hidden_state: str = "last", noise: ArrayLike = None, steps: Optional[int] = None,
               cfg_scale: Optional[float] = None, guidance_low: Optional[float] = None,
               guidance_high: Optional[float] = None, stochasticity: Optional[float] = None,
               transport: Optional[str] = None, t_max: Optional[float] = None, t_min: Optional[float] = None,
               schedule: Optional[Schedule] = None, mode: Optional[str] = None, height: Optional[int] = None,
               width: Optional[int] = None, seed: int = 0, first_index: int = 0,
               sample_indices: Optional[Sequence[int]] = None, batch_size: Optional[int] = None,
               on_step: Optional[Callable[[StepInfo], Optional[bool]]] = None,
               trajectory: bool = False) -> SampleOutput:
        """Samples with the any-step transition sampler, as `tim sample` does.

        What is sampled: `labels` (B) for a class-conditional model (num_classes = unconditional);
        for a text-to-image one `prompts` (a string or a list of B strings), encoded by
        `text_encoder` (a tim.TextEncoder or its folder; default: the one given to tim.load) with
        `max_length` tokens and `hidden_state` ('last' or 'penultimate') as `tim sample
        --text-encoder DIR --prompt ...` encodes them, or caption features `cap_feats` (B, M,
        caption_dim) and, for guidance, `null_cap_feats` (1, M, caption_dim) (TextEncoder.encode's).
        caption_batching (prompts, or cap_feats with their `cap_mask` (B, M)): 'per-prompt' (the
        default), every prompt's image is the one it gets sampled alone; 'released', each batch
        (batch_size rows, all of them when None) is cut to its longest prompt as the released
        scripts do (tim sample --caption-batching released, whose --batch-size is 64). Without
        cap_mask, cap_feats are sampled as given. Per-prompt runs keep no trajectory.

        Settings (None: the checkpoint's metadata, else tim's default): steps, cfg_scale (guidance
        when > 1), guidance_low/guidance_high (the window, fractions of t_max), stochasticity
        (OT-FM only), transport ('ot-fm', 'trigflow', 'edm', 'vp', 've'), t_max/t_min, schedule
        ('linspace', 'shift:S', 'karras:RHO', a list of decreasing times, or a callable t(i, N) or
        t(i, N, t_max, t_min)), mode ('transition', 'diffusion'), height/width (latent pixels).

        Noise: `noise` (B, C, H, W), else tim.initial_noise from `seed`, row b drawing stream
        first_index + b (or sample_indices[b]); the same stream feeds the row's stochastic steps.
        batch_size: sample at most this many rows per run (every row keeps its own stream).
        on_step(info): called after every step with a tim.StepInfo; return False to stop (with
        batch_size: the rows of the chunks run so far; later chunks are not run).
        trajectory: also return the states after every step (None when a batch_size run is
        cancelled after its first chunk: its rows then stopped after different numbers of steps).
        """
        if caption_batching not in ("per-prompt", "released"):
            raise Error(f"caption_batching: expected 'per-prompt' or 'released', got {caption_batching!r}")
        lengths = None
        if prompts is not None:
            if self.kind != "t2i":
                raise Error(f"prompts: {self.path} is a class-conditional (C2I) TiM; it samples from labels")
            if cap_feats is not None or null_cap_feats is not None or cap_mask is not None:
                raise Error("prompts: give prompts or cap_feats (with null_cap_feats, cap_mask), not both")
            encoder = _text_encoder_of(text_encoder if text_encoder is not None else self.text_encoder)
            if encoder.hidden_size != self.caption_dim:
                raise Error(f"text_encoder '{encoder.path}': its hidden size is {encoder.hidden_size}, the model's "
                            f"caption features have cap_dim {self.caption_dim}")
            encoded = encoder.encode(prompts, max_length=max_length, hidden_state=hidden_state)
            cap_feats, null_cap_feats, lengths = encoded.cap_feats, encoded.null_cap_feats, encoded.lengths
        elif text_encoder is not None:
            raise Error("text_encoder: given without prompts")
        elif cap_mask is not None:
            lengths = _mask_lengths(cap_mask, cap_feats)
        if callable(schedule):
            base = self._native.resolve(steps, cfg_scale, guidance_low, guidance_high, stochasticity, transport,
                                        t_max, t_min, None, mode, height, width)
            schedule = _call_schedule(schedule, base["steps"], base["t_max"], base["t_min"])
        settings = (steps, cfg_scale, guidance_low, guidance_high, stochasticity, transport, t_max, t_min,
                    _schedule_text(schedule), mode, height, width)
        labels = None if labels is None else _as_array(labels, np.int64, "labels")
        cap_feats = None if cap_feats is None else _as_array(cap_feats, np.float32, "cap_feats")
        null_cap_feats = None if null_cap_feats is None else _as_array(null_cap_feats, np.float32, "null_cap_feats")
        noise = None if noise is None else _as_array(noise, np.float64, "noise")
        if sample_indices is not None:
            sample_indices = [int(i) for i in sample_indices]
            if any(i < 0 for i in sample_indices):
                raise Error("sample_indices: every index must be >= 0")
        if seed < 0 or first_index < 0:
            raise Error(f"seed and first_index must be >= 0, got {seed} and {first_index}")

        released = caption_batching == "released"

        def run(rows: Optional[slice]) -> dict:
            pick = (lambda a: a) if rows is None else (lambda a: None if a is None else a[rows])
            indices = sample_indices if sample_indices is None or rows is None else sample_indices[rows]
            first = first_index if rows is None or sample_indices is not None else first_index + rows.start
            return self._native.sample(*settings, pick(labels), pick(cap_feats), null_cap_feats, pick(lengths),
                                       released, pick(noise), seed, first, indices, trajectory, on_step)

        batch = len(labels) if labels is not None else len(cap_feats) if cap_feats is not None else 0
        if batch_size is None or batch == 0 or batch_size >= batch:
            if batch_size is not None and batch_size < 1:
                raise Error(f"batch_size must be at least 1, got {batch_size}")
            return _output(run(None))
        if batch_size < 1:
            raise Error(f"batch_size must be at least 1, got {batch_size}")
        # The chunks see slices: rows of sample_indices or noise beyond the batch would be dropped
        # unseen. The whole call checks them, and raises tim's message, before any computing.
        if (sample_indices is not None and len(sample_indices) != batch) or (
                noise is not None and (noise.ndim == 0 or noise.shape[0] != batch)) or (
                lengths is not None and len(lengths) != batch):
            return _output(run(None))
        parts = []
        for start in range(0, batch, batch_size):
            parts.append(run(slice(start, min(start + batch_size, batch))))
            if parts[-1]["cancelled"]:
                break
        last = parts[-1]
        joined = dict(last)
        joined["latents"] = np.concatenate([p["latents"] for p in parts])
        joined["x"] = np.concatenate([p["x"] for p in parts])
        joined["labels"] = None if last["labels"] is None else np.concatenate([p["labels"] for p in parts])
        joined["sample_indices"] = [i for p in parts for i in p["sample_indices"]]
        # A run cancelled in a later chunk leaves the earlier chunks' rows at more steps than its
        # own: their trajectories have different lengths, and no one trajectory fits the latents.
        if trajectory and all(p["steps_done"] == last["steps_done"] for p in parts):
            joined["trajectory"] = np.concatenate([p["trajectory"] for p in parts], axis=1)
        else:
            joined["trajectory"] = None
        return _output(joined)


def _output(result: dict) -> SampleOutput:
    return SampleOutput(latents=result["latents"], x=result["x"], labels=result["labels"],
                        sample_indices=list(result["sample_indices"]), times=list(result["times"]),
                        steps_done=result["steps_done"], cancelled=result["cancelled"], settings=result["settings"],
                        trajectory=result["trajectory"])


def load(path: str, device: str = "cpu", dtype: str = "float32", *, text_encoder: Union["TextEncoder", str, None] = None,
         num_heads: Optional[int] = None, new_condition: Optional[str] = None,
         mlp_ratio: Optional[float] = None) -> Model:
    """Loads a TiM checkpoint (.safetensors), class-conditional or text-to-image by its tensors.

    device: 'cpu', or 'cuda' (the current GPU) in a package built with CUDA (pip install . finds
    nvcc; tim.cuda_available()). dtype: 'float32' (the CPU's, and the `tim` program's), or on
    cuda also 'bfloat16' (tim sample --device cuda --precision bfloat16). text_encoder: a
    tim.TextEncoder or its folder, for sample(prompts=...) of a T2I model. num_heads,
    new_condition ('t-r', 'r', 't,r'), mlp_ratio: what a released checkpoint's shapes cannot
    tell, as the YAML --config of `tim sample` gives it; otherwise the checkpoint's metadata says.
    """
    dtype = np.dtype(dtype).name if not isinstance(dtype, str) and dtype is not None else dtype
    if device == "cuda":
        if not _tim.cuda_built:
            raise Error("device 'cuda': this tim package was built without CUDA (no nvcc was found when it was "
                        "installed); install it where nvcc is (pip install . finds it on PATH or in "
                        "/usr/local/cuda/bin), or use device='cpu'")
        if dtype not in ("float32", "bfloat16"):
            raise Error(f"dtype '{dtype}': on cuda the network runs float32 or bfloat16")
        if _tim.cuda_device_count() == 0:
            raise Error("device 'cuda': no CUDA device is visible to this process (no GPU, no driver, or "
                        "CUDA_VISIBLE_DEVICES hides them); use device='cpu'")
    elif device == "cpu":
        if dtype != "float32":
            raise Error(f"dtype '{dtype}': the CPU runs float32 (dtype='float32')")
    else:
        raise Error(f"device '{device}': expected 'cpu' or 'cuda'")
    model = Model(_tim.NativeModel(str(path), device, dtype, num_heads, new_condition, mlp_ratio))
    if text_encoder is not None:
        if model.kind != "t2i":
            raise Error(f"text_encoder: {model.path} is a class-conditional (C2I) TiM; it samples from labels")
        model.text_encoder = _text_encoder_of(text_encoder)
    return model


def cuda_available() -> bool:
    """Whether device='cuda' can run here: the package was built with CUDA and a GPU is visible."""
    return bool(_tim.cuda_built) and _tim.cuda_device_count() > 0


class Decoder:
    """A latent decoder on the CPU in float32: the SD VAE (AutoencoderKL) or the DC-AE
    (AutoencoderDC), chosen by its tensors, configured by a diffusers config.json beside the
    weights when there is one (as `tim sample --vae`)."""

    def __init__(self, native: Any):
        self._native = native

    @property
    def latent_channels(self) -> int:
        return self._native.latent_channels

    @property
    def upscale(self) -> int:
        """Image pixels per latent pixel (8 for the SD VAE, 32 for the DC-AE)."""
        return self._native.upscale

    def describe(self) -> str:
        return self._native.describe()

    def decode(self, latents: ArrayLike) -> np.ndarray:
        """images (B, 3, H, W) float32 in about [-1, 1] from latents (B, L, h, w); tim.to_uint8
        makes bytes of them."""
        return self._native.decode(_as_array(latents, np.float32, "latents"))


def load_decoder(path: str, tile: int = 0, overlap: int = 8) -> Decoder:
    """Loads a decoder's diffusion_pytorch_model.safetensors. tile > 0: decode in tiles of that
    many latent pixels sharing `overlap` (bounded memory; the image differs slightly, docs/vae.md)."""
    return Decoder(_tim.NativeDecoder(str(path), tile, overlap))


@dataclass
class EncodedPrompts:
    """What TextEncoder.encode returns, in the layout `tim encode` writes. Unpacks as
    (cap_feats, cap_mask), like diffusers' encode_prompt."""

    cap_feats: np.ndarray  # (B, M, D) float32, M the longest prompt's tokens (BOS included)
    cap_mask: np.ndarray  # (B, M) int64: 1 on each prompt's real tokens
    null_cap_feats: np.ndarray  # (1, M, D) float32: the empty prompt's features (guidance)
    input_ids: np.ndarray  # (B, M) int64
    lengths: list  # real tokens per prompt
    truncated: list  # whether each prompt had more than max_length - 1 tokens

    def __iter__(self):
        return iter((self.cap_feats, self.cap_mask))


def _prompt_bytes(prompts: Union[str, bytes, Sequence[Union[str, bytes]]]) -> list:
    """The prompts as UTF-8 bytes for tim, which checks them: a str that is not valid Unicode
    (lone surrogates) reaches tim as the bytes it stands for, and tim says it is not valid UTF-8."""
    if isinstance(prompts, (str, bytes)):
        prompts = [prompts]
    try:
        prompts = list(prompts)
    except TypeError:
        raise Error(f"prompts: expected a string or a list of strings, got {type(prompts).__name__}") from None
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, bytes):
            out.append(p)
        elif isinstance(p, str):
            try:
                out.append(p.encode("utf-8", "surrogateescape"))
            except UnicodeEncodeError:
                out.append(p.encode("utf-8", "surrogatepass"))
        else:
            raise Error(f"prompts: prompt {i} is a {type(p).__name__}, expected a string")
    return out


class TextEncoder:
    """A Gemma-3 text encoder folder (config.json, model.safetensors, tokenizer.model, as Hugging
    Face ships google/gemma-3-1b-it) loaded on the CPU as `tim encode` and `tim sample
    --text-encoder` load it: bfloat16 weights stay memory-mapped, computed in float32."""

    def __init__(self, path: str):
        if not _tim.text_built:
            raise Error("text_encoder: this tim package was built without tim::text (SentencePiece); install "
                        "libsentencepiece-dev and pkg-config and reinstall it")
        self._native = _tim.NativeTextEncoder(str(path))

    @property
    def path(self) -> str:
        return self._native.path

    @property
    def hidden_size(self) -> int:
        """D, the width of the caption features (a T2I model's caption_dim)."""
        return self._native.hidden_size

    @property
    def weight_dtype(self) -> str:
        """'bfloat16' or 'float32': how the weights are held."""
        return self._native.weight_dtype

    def describe(self) -> str:
        return self._native.describe()

    def __repr__(self) -> str:
        return f"tim.TextEncoder({self.path!r}: {self.describe()})"

    def encode(self, prompts: Union[str, Sequence[str]], *, max_length: int = 256,
               hidden_state: str = "last") -> EncodedPrompts:
        """Caption features of prompts as the released encode_prompt makes them (BOS, right padding,
        truncation to max_length tokens), trimmed to the longest prompt: `tim encode`'s output.
        hidden_state: 'last' (the final norm's output, the released setting) or 'penultimate'.
        A prompt longer than max_length - 1 tokens is truncated with a warning."""
        texts = _prompt_bytes(prompts)
        d = self._native.encode(texts, int(max_length), hidden_state)
        for b, cut in enumerate(d["truncated"]):
            if cut:
                warnings.warn(f"prompt {b} has more than {max_length - 1} tokens and was truncated to max_length "
                              f"{max_length}", stacklevel=2)
        return EncodedPrompts(cap_feats=d["cap_feats"], cap_mask=d["cap_mask"], null_cap_feats=d["null_cap_feats"],
                              input_ids=d["input_ids"], lengths=list(d["lengths"]), truncated=list(d["truncated"]))


def load_text_encoder(path: str) -> TextEncoder:
    """Loads a Gemma-3 text encoder folder (tim.TextEncoder)."""
    return TextEncoder(path)


def _text_encoder_of(value: Union[TextEncoder, str, None]) -> TextEncoder:
    if value is None:
        raise Error("prompts: no text encoder; pass text_encoder= (a tim.TextEncoder or its folder) to sample or "
                    "to tim.load")
    return value if isinstance(value, TextEncoder) else TextEncoder(value)


def make_grid(images: ArrayLike, columns: int = 8, padding: int = 2) -> np.ndarray:
    """One uint8 image (rows H', W', C) of uint8 images (B, H, W, C) (tim.to_uint8's), `columns`
    to a row with `padding` black pixels between them; for display (matplotlib's imshow, PIL)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise Error(f"make_grid: expected uint8 images (B, H, W, C), got {images.dtype} of shape {images.shape}")
    if columns < 1 or padding < 0:
        raise Error(f"make_grid: columns must be >= 1 and padding >= 0, got {columns} and {padding}")
    count, height, width, channels = images.shape
    columns = min(columns, count)
    rows = -(-count // columns)
    grid = np.zeros((rows * (height + padding) + padding, columns * (width + padding) + padding, channels), np.uint8)
    for i in range(count):
        top = padding + (i // columns) * (height + padding)
        left = padding + (i % columns) * (width + padding)
        grid[top:top + height, left:left + width] = images[i]
    return grid
