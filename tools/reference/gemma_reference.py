"""Our own float64 reference of the Gemma-3 text decoder stack as the released T2I model uses it.

Written from the Gemma-3 description (the config.json hyper-parameters, Hugging Face's tensor
names), not copied from any implementation, with every operation spelled out (no SDPA, no fused
ops), and checked against transformers' Gemma3ForCausalLM on random weights by `--self-test`.

Shape legend: B prompts, N tokens, D hidden, nh query heads, nkv key/value heads, hd head dim,
Hm MLP hidden (intermediate_size), V vocabulary.

  x      = embed_tokens[ids] * normalizer            normalizer = sqrt(D), rounded to the weights' dtype
  layer i (sliding when layer_types[i] == "sliding_attention"):
    h    = rms(x) * (1 + input_layernorm)
    q, k, v = h Wq^T, h Wk^T, h Wv^T                 heads (nh | nkv | nkv, hd)
    q, k = rms_hd(q) * (1 + q_norm), rms_hd(k) * (1 + k_norm), then rotary (rotate-half pairs
           (j, j + hd/2), angle pos / base^(2j/hd), base rope_local_base_freq when sliding, rope_theta else)
    a    = softmax(q k^T / sqrt(query_pre_attn_scalar) + mask) v   query head h reads kv head h // (nh/nkv)
           mask: key j visible from query i iff j <= i, j is a real token, and i - j < sliding_window when sliding
    x   += rms(a Wo^T) * (1 + post_attention_layernorm)
    h    = rms(x) * (1 + pre_feedforward_layernorm)
    x   += rms(down(gelu_tanh(gate(h)) * up(h))) * (1 + post_feedforward_layernorm)
  last        = rms(x) * (1 + norm)                    (hidden_states[-1], last_hidden_state)
  penultimate = x before the last layer                (hidden_states[-2])
  rms(u) = u / sqrt(mean(u^2) + rms_norm_eps)
A query row with no visible key (a padding position further than the window from every real
token) gives zeros; with the released 1B config (window 512, 256 tokens) it cannot happen.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field

import torch


@dataclass
class GemmaConfig:
    vocab_size: int = 64
    hidden_size: int = 32
    intermediate_size: int = 48
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 8
    query_pre_attn_scalar: int = 8
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_local_base_freq: float = 10_000.0
    sliding_window: int = 4
    layer_types: list[str] = field(default_factory=lambda: ["sliding_attention", "full_attention"])

    @staticmethod
    def from_json(config: dict) -> "GemmaConfig":
        """The hyper-parameters of a Hugging Face config.json (gemma3_text, or gemma3 with text_config)."""
        if "text_config" in config:
            config = config["text_config"]
        c = GemmaConfig(
            vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"], num_hidden_layers=config["num_hidden_layers"],
            num_attention_heads=config["num_attention_heads"], num_key_value_heads=config["num_key_value_heads"],
            head_dim=config.get("head_dim", 256), query_pre_attn_scalar=config.get("query_pre_attn_scalar", 256),
            rms_norm_eps=config.get("rms_norm_eps", 1e-6), sliding_window=config.get("sliding_window", 4096))
        rope = config.get("rope_parameters") or {}
        c.rope_theta = rope.get("full_attention", {}).get("rope_theta", config.get("rope_theta", 1_000_000.0))
        c.rope_local_base_freq = rope.get("sliding_attention", {}).get(
            "rope_theta", config.get("rope_local_base_freq", 10_000.0))
        if config.get("layer_types"):
            c.layer_types = list(config["layer_types"])
        else:
            pattern = config.get("sliding_window_pattern", 6)
            c.layer_types = ["sliding_attention" if (i + 1) % pattern else "full_attention"
                             for i in range(c.num_hidden_layers)]
        return c

    def to_json(self) -> dict:
        """A config.json in the form the released gemma-3-1b-it folder has (rope_theta, layer_types)."""
        return {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "vocab_size": self.vocab_size,
                "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
                "num_hidden_layers": self.num_hidden_layers, "num_attention_heads": self.num_attention_heads,
                "num_key_value_heads": self.num_key_value_heads, "head_dim": self.head_dim,
                "query_pre_attn_scalar": self.query_pre_attn_scalar, "rms_norm_eps": self.rms_norm_eps,
                "rope_theta": self.rope_theta, "rope_local_base_freq": self.rope_local_base_freq,
                "sliding_window": self.sliding_window, "layer_types": self.layer_types,
                "hidden_activation": "gelu_pytorch_tanh", "attn_logit_softcapping": None,
                "final_logit_softcapping": None, "rope_scaling": None, "pad_token_id": 0, "eos_token_id": 1,
                "bos_token_id": 2, "attention_bias": False, "tie_word_embeddings": True}


def parameter_shapes(c: GemmaConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the decoder stack, with Hugging Face's names."""
    D, hd = c.hidden_size, c.head_dim
    shapes = {"model.embed_tokens.weight": (c.vocab_size, D), "model.norm.weight": (D,)}
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (c.num_attention_heads * hd, D),
            p + "self_attn.k_proj.weight": (c.num_key_value_heads * hd, D),
            p + "self_attn.v_proj.weight": (c.num_key_value_heads * hd, D),
            p + "self_attn.o_proj.weight": (D, c.num_attention_heads * hd),
            p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,),
            p + "input_layernorm.weight": (D,), p + "post_attention_layernorm.weight": (D,),
            p + "pre_feedforward_layernorm.weight": (D,), p + "post_feedforward_layernorm.weight": (D,),
            p + "mlp.gate_proj.weight": (c.intermediate_size, D), p + "mlp.up_proj.weight": (c.intermediate_size, D),
            p + "mlp.down_proj.weight": (D, c.intermediate_size),
        })
    return shapes


def rms_norm(u: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    mean_square = (u * u).sum(-1, keepdim=True) / u.shape[-1]
    return u / torch.sqrt(mean_square + eps) * (1.0 + weight)


def gelu_tanh(u: torch.Tensor) -> torch.Tensor:
    return 0.5 * u * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u ** 3)))


# The dtype of the rotary angles. float64 for the goldens; the self-test sets float32 to see
# transformers' tables (computed in float32 whatever the model's dtype) to rounding.
ROTARY_DTYPE = torch.float64


def rotate(u: torch.Tensor, base: float) -> torch.Tensor:
    """u (B, heads, N, hd): rotate-half rotary, pair (j, j + hd/2) by pos / base^(2j/hd)."""
    N, hd = u.shape[-2], u.shape[-1]
    half = hd // 2
    j = torch.arange(half, dtype=ROTARY_DTYPE)
    inv_freq = 1.0 / (base ** (2.0 * j / hd))
    angle = torch.arange(N, dtype=ROTARY_DTYPE)[:, None] * inv_freq[None, :]  # (N, hd/2)
    cos, sin = torch.cos(angle).to(u.dtype), torch.sin(angle).to(u.dtype)
    a, b = u[..., :half], u[..., half:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def visible(c: GemmaConfig, sliding: bool, lengths: torch.Tensor, N: int) -> torch.Tensor:
    """(B, N queries, N keys) booleans: which key each query attends to."""
    i = torch.arange(N)[:, None]
    j = torch.arange(N)[None, :]
    allowed = j <= i
    if sliding:
        allowed = allowed & (i - j < c.sliding_window)
    real = j[None, :, :] < lengths[:, None, None]
    return allowed[None] & real


def attention(q, k, v, mask, scale):
    """q (B, nh, N, hd), k/v (B, nkv, N, hd), mask (B, N, N): out (B, N, nh*hd)."""
    B, nh, N, hd = q.shape
    group = nh // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask[:, None], float("-inf"))
    top = scores.amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = torch.exp(scores - top)
    total = e.sum(-1, keepdim=True)
    weights = torch.where(total > 0, e / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(e))
    return (weights @ v).transpose(1, 2).reshape(B, N, nh * hd)


def encode(c: GemmaConfig, weights: dict[str, torch.Tensor], ids: torch.Tensor, lengths: torch.Tensor,
           normalizer_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(last, penultimate) hidden states (B, N, D) of token ids (B, N) whose first lengths[b] are real.
    The embedding scale sqrt(D) is rounded to `normalizer_dtype` (the stored weights' dtype; None:
    the compute dtype)."""
    w = weights
    B, N = ids.shape
    dtype = w["model.embed_tokens.weight"].dtype
    normalizer = torch.tensor(math.sqrt(c.hidden_size), dtype=normalizer_dtype or dtype).to(dtype)
    x = w["model.embed_tokens.weight"][ids] * normalizer
    nh, nkv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
    penultimate = None
    for i in range(c.num_hidden_layers):
        if i == c.num_hidden_layers - 1:
            penultimate = x
        p = f"model.layers.{i}."
        sliding = c.layer_types[i] == "sliding_attention"
        h = rms_norm(x, w[p + "input_layernorm.weight"], c.rms_norm_eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(B, N, nh, hd).transpose(1, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(B, N, nkv, hd).transpose(1, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(B, N, nkv, hd).transpose(1, 2)
        q = rms_norm(q, w[p + "self_attn.q_norm.weight"], c.rms_norm_eps)
        k = rms_norm(k, w[p + "self_attn.k_norm.weight"], c.rms_norm_eps)
        base = c.rope_local_base_freq if sliding else c.rope_theta
        q, k = rotate(q, base), rotate(k, base)
        a = attention(q, k, v, visible(c, sliding, lengths, N), c.query_pre_attn_scalar ** -0.5)
        x = x + rms_norm(a @ w[p + "self_attn.o_proj.weight"].T, w[p + "post_attention_layernorm.weight"],
                         c.rms_norm_eps)
        h = rms_norm(x, w[p + "pre_feedforward_layernorm.weight"], c.rms_norm_eps)
        m = gelu_tanh(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)
        x = x + rms_norm(m @ w[p + "mlp.down_proj.weight"].T, w[p + "post_feedforward_layernorm.weight"],
                         c.rms_norm_eps)
    if penultimate is None:  # one layer: the penultimate state is the scaled embedding
        penultimate = x
    return rms_norm(x, w["model.norm.weight"], c.rms_norm_eps), penultimate


def random_weights(c: GemmaConfig, generator: torch.Generator, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """Every tensor random: projections N(0, 1/fan_in), norms N(0, 0.3) (so 1 + w is not 1)."""
    out = {}
    for name, shape in parameter_shapes(c).items():
        if len(shape) == 1:
            t = torch.randn(shape, generator=generator, dtype=torch.float64) * 0.3
        elif "embed_tokens" in name:
            t = torch.randn(shape, generator=generator, dtype=torch.float64) * 0.05
        else:
            t = torch.randn(shape, generator=generator, dtype=torch.float64) / math.sqrt(shape[1])
        out[name] = t.to(dtype)
    return out


def self_test() -> int:
    """The reference against transformers' Gemma3ForCausalLM (eager attention, float64) on random
    weights: GQA, the released layer pattern, a window shorter than the prompt, right padding.
    transformers computes three things in float32 whatever the model's dtype: the RMSNorms, the
    eager softmax and the rotary tables. The comparison is run twice: as transformers ships
    (agreement to float32 rounding expected, 1e-5), and with the norms and the softmax in float64
    (two patches of precision only, restored afterwards) and our rotary tables in float32 as
    transformers builds them (agreement to float64 rounding expected, 1e-12)."""
    import torch.nn.functional as F
    import transformers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    from transformers.models.gemma3 import modeling_gemma3

    global ROTARY_DTYPE
    shipped_norm, shipped_softmax = modeling_gemma3.Gemma3RMSNorm.forward, F.softmax

    def norm_in_input_dtype(self, x):
        return self._norm(x) * (1.0 + self.weight)

    def softmax_in_input_dtype(x, dim=None, dtype=None, **kwargs):
        return shipped_softmax(x, dim=dim, **kwargs)

    results = {}
    for patched in (False, True):
        if patched:
            modeling_gemma3.Gemma3RMSNorm.forward, F.softmax = norm_in_input_dtype, softmax_in_input_dtype
            ROTARY_DTYPE = torch.float32
        try:
            results[patched] = compare_with_transformers(Gemma3ForCausalLM, Gemma3TextConfig)
        finally:
            modeling_gemma3.Gemma3RMSNorm.forward, F.softmax = shipped_norm, shipped_softmax
            ROTARY_DTYPE = torch.float64
    print(f"transformers {transformers.__version__}: worst relative error {results[False]:.2e} as shipped "
          f"(required 1e-5), {results[True]:.2e} in float64 (required 1e-12)")
    ok = results[False] < 1e-5 and results[True] < 1e-12
    print("self-test:", "ok" if ok else "FAILED")
    return 0 if ok else 1


def compare_with_transformers(Gemma3ForCausalLM, Gemma3TextConfig) -> float:

    worst = 0.0
    cases = [
        GemmaConfig(num_hidden_layers=7, layer_types=None, sliding_window=3),  # pattern 6: layer 5 global
        GemmaConfig(num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=12,
                    num_hidden_layers=3, sliding_window=5, layer_types=["sliding_attention", "full_attention",
                                                                           "sliding_attention"]),
    ]
    for index, c in enumerate(cases):
        pattern = None
        if c.layer_types is None:
            pattern = 6
            c.layer_types = ["sliding_attention" if (i + 1) % pattern else "full_attention"
                             for i in range(c.num_hidden_layers)]
        g = torch.Generator().manual_seed(100 + index)
        weights = random_weights(c, g)
        hf_kwargs = c.to_json()
        hf_kwargs.pop("architectures"), hf_kwargs.pop("model_type")
        if pattern is not None:
            hf_kwargs.pop("layer_types")
            hf_kwargs["sliding_window_pattern"] = pattern
        hf_config = Gemma3TextConfig(**hf_kwargs)
        hf_config._attn_implementation = "eager"
        model = Gemma3ForCausalLM(hf_config).to(torch.float64).eval()
        assert model.config.layer_types == c.layer_types, (model.config.layer_types, c.layer_types)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
        N = 9
        lengths = torch.tensor([9, 7, 8])  # padding shorter than the window keeps every query row non-empty
        assert int((N - lengths).max()) < c.sliding_window
        ids = torch.randint(4, c.vocab_size, (3, N), generator=g)
        ids[:, 0] = 2
        mask = (torch.arange(N)[None, :] < lengths[:, None]).long()
        ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))
        with torch.no_grad():
            out = model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            # transformers keeps sqrt(D) as a float32 buffer that .to(float64) converts: the
            # float32-rounded scale, which the reference's rule (round to the stored dtype) gives
            # for float32 weights.
            last, penultimate = encode(c, weights, ids, lengths, normalizer_dtype=torch.float32)
        for name, ours, theirs in [("last", last, out.last_hidden_state), ("last vs hidden_states[-1]", last,
                                   out.hidden_states[-1]), ("penultimate", penultimate, out.hidden_states[-2])]:
            error = ((ours - theirs).abs().max() / theirs.abs().max()).item()
            print(f"case {index} {name} (rotary {ROTARY_DTYPE}): relative error {error:.2e}")
            worst = max(worst, error)
        # Padding really is masked: changing a padded id changes nothing at the real positions.
        ids2 = ids.clone()
        ids2[1, 8] = 5
        with torch.no_grad():
            last2, _ = encode(c, weights, ids2, lengths, normalizer_dtype=torch.float32)
        assert torch.equal(last2[1, :7], last[1, :7])
    return worst


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true")
    if parser.parse_args().self_test:
        sys.exit(self_test())
    parser.print_help()
