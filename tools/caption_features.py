#!/usr/bin/env python3
"""Compute caption features for the text-to-image TiM with its released text encoder.

The released T2I model reads the last hidden state of Gemma-3-1B (google/gemma-3-1b-it), one
vector of cap_dim = 1152 values per caption token. This script computes them as the released
sampling scripts do, for users who have the encoder's weights locally, and writes the file
`tim sample --captions` and `tim forward` read:

    python tools/caption_features.py --text-encoder /path/to/gemma-3-1b-it \\
        --captions captions.txt --out caps.safetensors

As released: the tokenizer pads on the RIGHT to max_length = 256 tokens (longer captions are
truncated), the decoder runs with that attention mask, its last hidden state is taken, and the
batch is trimmed to its longest caption (the largest attention-mask sum), M tokens. The empty
caption "" is encoded the same way and trimmed to the same M for classifier-free guidance.
Output (safetensors, float32):
  cap_feats       [B, M, cap_dim]  one row per caption, in input order
  null_cap_feats  [1, M, cap_dim]  the empty caption
The TiM cross-attention has no mask, so the hidden states at padding positions are part of the
condition; they depend on the encoder's attention implementation (see docs/t2i.md), and M
depends on which captions share a batch. Needs torch, transformers (with Gemma 3 support) and
safetensors; importing this file needs none of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

MAX_LENGTH = 256  # released max_seq_length


def read_captions(args: argparse.Namespace) -> list[str]:
    """Captions from --caption (repeatable) and --captions FILE (one per line, blank lines
    skipped), in that order."""
    captions = list(args.caption or [])
    if args.captions:
        with open(args.captions, encoding="utf-8") as f:
            captions += [line.rstrip("\n") for line in f if line.strip()]
    if not captions:
        raise SystemExit("error: no captions (give --caption TEXT or --captions FILE)")
    return captions


def tokenize(tokenizer: Any, captions: Sequence[str], max_length: int) -> tuple[Any, Any]:
    """input_ids and attention_mask (B, max_length), right padding, truncation: as released."""
    tokenizer.padding_side = "right"
    batch = tokenizer(list(captions), padding="max_length", max_length=max_length, truncation=True,
                      return_tensors="pt")
    return batch.input_ids, batch.attention_mask


def trimmed_length(attention_mask: Any) -> int:
    """M: the longest caption of the batch in tokens (the released `cap_mask.sum(-1).max()`)."""
    return int(attention_mask.sum(dim=-1).max().item())


def encode(encoder: Any, tokenizer: Any, captions: Sequence[str], max_length: int, device: str) -> tuple[Any, Any]:
    """(last hidden state (B, max_length, cap_dim), attention mask (B, max_length))."""
    import torch
    input_ids, mask = tokenize(tokenizer, captions, max_length)
    with torch.no_grad():
        out = encoder(input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
    return out.last_hidden_state, mask


def caption_features(encoder: Any, tokenizer: Any, captions: Sequence[str], max_length: int = MAX_LENGTH,
                     device: str = "cpu") -> dict[str, Any]:
    """{"cap_feats": (B, M, cap_dim), "null_cap_feats": (1, M, cap_dim), "tokens": per-caption counts}."""
    import torch
    hidden, mask = encode(encoder, tokenizer, captions, max_length, device)
    null_hidden, _ = encode(encoder, tokenizer, [""], max_length, device)
    M = trimmed_length(mask)
    return {
        "cap_feats": hidden[:, :M].to(torch.float32).cpu().contiguous(),
        "null_cap_feats": null_hidden[:, :M].to(torch.float32).cpu().contiguous(),
        "tokens": [int(n) for n in mask.sum(dim=-1).tolist()],
    }


def load_encoder(path: str, dtype_name: str, device: str, attn_implementation: str) -> tuple[Any, Any]:
    """The Gemma-3 decoder stack (AutoModelForCausalLM(...).get_decoder(), as released) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype_name]
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype, attn_implementation=attn_implementation)
    encoder = model.get_decoder().eval().to(device)
    encoder.requires_grad_(False)
    return encoder, tokenizer


def save(path: str, result: dict[str, Any], captions: Sequence[str], args: argparse.Namespace) -> None:
    from safetensors.torch import save_file
    metadata = {
        "generator": "tools/caption_features.py",
        "text_encoder": args.text_encoder,
        "max_length": str(args.max_length),
        "dtype": args.dtype,
        "attn_implementation": args.attn_implementation,
        "captions": json.dumps(list(captions), ensure_ascii=False),
        "tokens": json.dumps(result["tokens"]),
    }
    save_file({"cap_feats": result["cap_feats"], "null_cap_feats": result["null_cap_feats"]}, path, metadata=metadata)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See docs/t2i.md.")
    parser.add_argument("--text-encoder", help="local folder of google/gemma-3-1b-it (weights and tokenizer)")
    parser.add_argument("--caption", action="append", metavar="TEXT", help="a caption (repeatable)")
    parser.add_argument("--captions", metavar="FILE", help="a text file, one caption per line")
    parser.add_argument("--out", help="safetensors file to write")
    parser.add_argument("--max-length", type=int, default=MAX_LENGTH, help="tokens per caption at most (256 as released)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                        help="encoder precision (released: bfloat16); features are stored as float32")
    parser.add_argument("--device", default="cpu", help="torch device for the encoder (cpu, cuda)")
    parser.add_argument("--attn-implementation", choices=("eager", "sdpa", "flash_attention_2"), default="eager",
                        help="the encoder's attention (released: flash_attention_2, which needs a GPU and flash-attn); "
                             "changes the features at padding positions only")
    parser.add_argument("--self-test", action="store_true", help="check tokenisation and trimming with a fake encoder")
    args = parser.parse_args(argv)
    if not args.self_test:
        missing = [flag for flag, value in (("--text-encoder", args.text_encoder), ("--out", args.out)) if not value]
        if missing:
            parser.error(f"{' and '.join(missing)} required")
        if args.max_length < 1:
            parser.error("--max-length must be >= 1")
    return args


def self_test() -> None:
    """The pipeline with a fake whitespace tokenizer (BOS + one id per word) and a fake encoder
    whose hidden state at position i encodes (input id, mask, i): checks right padding,
    truncation at max_length, the trim to the longest caption and the null caption."""
    import torch

    class FakeTokenizer:
        padding_side = "left"

        def __call__(self, texts, padding, max_length, truncation, return_tensors):
            assert padding == "max_length" and truncation and return_tensors == "pt"
            assert self.padding_side == "right"
            ids = torch.zeros(len(texts), max_length, dtype=torch.long)
            mask = torch.zeros(len(texts), max_length, dtype=torch.long)
            for b, text in enumerate(texts):
                tokens = ([2] + [10 + len(word) for word in text.split()])[:max_length]  # 2 = BOS
                ids[b, :len(tokens)] = torch.tensor(tokens)
                mask[b, :len(tokens)] = 1
            return argparse.Namespace(input_ids=ids, attention_mask=mask)

    class FakeEncoder:
        def __call__(self, input_ids, attention_mask, output_hidden_states):
            B, L = input_ids.shape
            position = torch.arange(L).expand(B, L)
            hidden = torch.stack([input_ids.float(), attention_mask.float(), position.float()], dim=-1)
            return argparse.Namespace(last_hidden_state=hidden.to(torch.bfloat16))

    captions = ["a cat", "a photo of a dog on a red sofa", "sky"]
    result = caption_features(FakeEncoder(), FakeTokenizer(), captions, max_length=256)
    feats, null = result["cap_feats"], result["null_cap_feats"]
    assert result["tokens"] == [3, 10, 2], result["tokens"]  # BOS + words
    assert feats.shape == (3, 10, 3) and feats.dtype == torch.float32, feats.shape
    assert null.shape == (1, 10, 3), null.shape
    assert feats[0, :3, 1].tolist() == [1, 1, 1] and feats[0, 3:, 1].tolist() == [0] * 7, "right padding"
    assert feats[1, :, 1].tolist() == [1] * 10, "the longest caption fills M"
    assert feats[:, :, 2].tolist() == [list(range(10))] * 3, "positions 0..M-1"
    assert null[0, 0].tolist() == [2, 1, 0] and null[0, 1:, 1].tolist() == [0] * 9, "null caption: BOS then padding"
    long = caption_features(FakeEncoder(), FakeTokenizer(), ["w " * 300], max_length=256)
    assert long["cap_feats"].shape[1] == 256 and long["tokens"] == [256], "truncated at max_length"
    args = parse_args(["--text-encoder", "enc", "--out", "o.safetensors", "--caption", "x", "--caption", "y"])
    assert read_captions(args) == ["x", "y"] and args.max_length == 256 and args.dtype == "bfloat16"
    print("caption_features self-test passed")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.self_test:
        self_test()
        return
    captions = read_captions(args)
    encoder, tokenizer = load_encoder(args.text_encoder, args.dtype, args.device, args.attn_implementation)
    result = caption_features(encoder, tokenizer, captions, args.max_length, args.device)
    save(args.out, result, captions, args)
    B, M, dim = result["cap_feats"].shape
    print(f"wrote {args.out}: cap_feats [{B}, {M}, {dim}], null_cap_feats [1, {M}, {dim}] "
          f"(tokens per caption: {result['tokens']})")


if __name__ == "__main__":
    main(sys.argv[1:])
