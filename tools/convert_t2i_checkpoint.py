#!/usr/bin/env python3
"""Convert a released TiM PyTorch checkpoint (t2i_model.bin) to safetensors for tim.

The released text-to-image checkpoint is a `torch.save` pickle of the network's state dict.
tim reads only safetensors, so convert it once:

    python tools/convert_t2i_checkpoint.py t2i_model.bin t2i_model.safetensors

The state dict is loaded with `torch.load(..., weights_only=True)` (no arbitrary code runs).
A wrapper dict ({"ema": ..., "model": ..., "state_dict": ...}) is unwrapped and a prefix shared
by every name ("module." from DistributedDataParallel, "_orig_mod." from torch.compile, ...)
is stripped; both are reported. Nothing is dropped unless you ask (--drop PREFIX); a value that
is not a tensor is an error. Tensors keep their dtype unless --dtype says otherwise.
Hyper-parameters the shapes cannot tell go to the file's __metadata__ when given
(--num-heads, --new-condition); the released T2I model has q/k norms, so its heads are read
from shapes and neither is needed. Works the same for the C2I .bin/.pt checkpoints.
See docs/t2i.md. Needs torch and safetensors (tools/reference/requirements.txt).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from typing import Any

WRAPPER_KEYS = ("ema", "ema_model", "model_ema", "state_dict", "model", "module", "model_state_dict", "net")
STRIPPABLE_PREFIXES = ("module.", "_orig_mod.", "ema.", "model.", "net.")
TIM_TOP_LEVEL = ("x_embedder", "t_embedder", "delta_embedder", "y_embedder", "blocks", "final_layer", "projector")
NEW_CONDITIONS = ("t-r", "r", "t,r", "t,t-r", "r,t-r", "t,r,t-r")


def is_state_dict(obj: Any) -> bool:
    import torch
    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap(obj: Any, key: str | None, notes: list[str]) -> dict:
    """The state dict inside `obj`: `obj` itself, or obj[key], or the first of WRAPPER_KEYS present
    (preferring the EMA weights, which the released scripts sample with)."""
    import torch
    path = []
    while not is_state_dict(obj):
        if not isinstance(obj, dict):
            raise SystemExit(f"error: expected a state dict (name -> tensor), found {type(obj).__name__}")
        if key is not None and not path:
            if key not in obj:
                raise SystemExit(f"error: --key {key!r} not in the checkpoint (top-level keys: {sorted(obj)})")
            chosen = key
        else:
            chosen = next((k for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], dict)), None)
            if chosen is None:
                bad = {k: type(v).__name__ for k, v in obj.items() if not isinstance(v, torch.Tensor)}
                raise SystemExit("error: the checkpoint is a dict with non-tensor values and no known wrapper key "
                                 f"({', '.join(WRAPPER_KEYS)}): {bad}; pick the state dict with --key")
        others = sorted(k for k in obj if k != chosen)
        notes.append(f"unwrapped '{chosen}'" + (f" (also present, not converted: {others})" if others else ""))
        path.append(chosen)
        obj = obj[chosen]
    return obj


def strip_prefixes(sd: dict, notes: list[str]) -> dict:
    """Removes a prefix every name shares, while the names do not already start like TiM's."""
    while True:
        if all(k.split(".", 1)[0] in TIM_TOP_LEVEL for k in sd):
            return sd
        prefix = next((p for p in STRIPPABLE_PREFIXES if all(k.startswith(p) for k in sd)), None)
        if prefix is None:
            return sd
        notes.append(f"stripped the prefix '{prefix}' shared by every name")
        sd = {k[len(prefix):]: v for k, v in sd.items()}


def describe(sd: dict) -> list[str]:
    """What the shapes say the network is (for the report; tim reads the same from the file)."""
    lines = []
    kind = ("T2I (caption embedder, cross-attention)" if "y_embedder.norm.weight" in sd
            else "C2I (label table)" if "y_embedder.embedding_table.weight" in sd else "unknown")
    lines.append(f"model: {kind}")
    if "x_embedder.proj.weight" in sd:
        D, C, p, _ = sd["x_embedder.proj.weight"].shape
        depth = 0
        while f"blocks.{depth}.adaLN_modulation.fc2.weight" in sd:
            depth += 1
        line = f"D {D}, C {C}, p {p}, depth {depth}"
        if "blocks.0.attn.q_norm.weight" in sd:
            line += f", heads {D // sd['blocks.0.attn.q_norm.weight'].shape[0]} (from q_norm)"
        if "y_embedder.norm.weight" in sd:
            line += f", cap_dim {sd['y_embedder.norm.weight'].shape[0]}"
        if "y_embedder.embedding_table.weight" in sd:
            line += f", classes {sd['y_embedder.embedding_table.weight'].shape[0] - 1}"
        lines.append(line)
    unknown = sorted({k.split(".", 1)[0] for k in sd} - set(TIM_TOP_LEVEL))
    if unknown:
        lines.append(f"warning: names outside the TiM network ({', '.join(unknown)}...): tim will refuse them; "
                     "drop them with --drop if they are not weights of the network")
    if any(k.startswith("projector.") for k in sd):
        lines.append("note: projector.* (training-only representation alignment) kept; tim ignores it")
    return lines


def convert(args: argparse.Namespace) -> None:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    notes: list[str] = []
    try:
        obj = torch.load(args.input, map_location="cpu", weights_only=not args.trust_pickle)
    except Exception as e:  # noqa: BLE001 - report any unpickling failure with its cause
        hint = "" if args.trust_pickle else (" (loaded with weights_only=True; if you trust the file, "
                                             "--trust-pickle allows arbitrary pickled objects)")
        raise SystemExit(f"error: cannot load {args.input}: {e}{hint}")
    sd = strip_prefixes(unwrap(obj, args.key, notes), notes)
    for prefix in args.drop:
        dropped = sorted(k for k in sd if k.startswith(prefix))
        if not dropped:
            raise SystemExit(f"error: --drop {prefix!r} matches no tensor")
        notes.append(f"dropped {len(dropped)} tensors under '{prefix}' (--drop)")
        sd = {k: v for k, v in sd.items() if not k.startswith(prefix)}

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    out: dict[str, torch.Tensor] = {}
    seen_storage: set[int] = set()
    for name, tensor in sd.items():
        t = tensor.detach()
        if args.dtype != "keep" and t.is_floating_point():
            t = t.to(dtypes[args.dtype])
        storage = t.untyped_storage().data_ptr()
        if storage in seen_storage or not t.is_contiguous() or t.storage_offset() != 0:
            t = t.contiguous().clone()  # safetensors stores each tensor on its own
        seen_storage.add(t.untyped_storage().data_ptr())
        out[name] = t

    metadata = {"converter": "tools/convert_t2i_checkpoint.py", "converted_from": os.path.basename(args.input)}
    if "y_embedder.norm.weight" in out:
        metadata["model_type"] = "t2i"
    elif "y_embedder.embedding_table.weight" in out:
        metadata["model_type"] = "c2i"
    if args.num_heads is not None:
        metadata["num_heads"] = str(args.num_heads)
    if args.new_condition is not None:
        metadata["new_condition"] = args.new_condition
    save_file(out, args.output, metadata=metadata)

    # Read back the names, shapes and dtypes written.
    with safe_open(args.output, "pt") as f:
        written = set(f.keys())
    if written != set(out):
        raise SystemExit(f"error: {args.output} does not hold the tensors written")

    counts = collections.Counter(str(t.dtype).replace("torch.", "") for t in out.values())
    parameters = sum(t.numel() for t in out.values())
    print(f"read {args.input}")
    for note in notes:
        print(f"  {note}")
    print(f"  {len(out)} tensors, {parameters:,} values ({', '.join(f'{n} {d}' for d, n in sorted(counts.items()))})")
    for line in describe(out):
        print(f"  {line}")
    print(f"wrote {args.output} (metadata: {', '.join(f'{k}={v}' for k, v in sorted(metadata.items()))})")
    print(f"next: tim inspect {args.output}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="See docs/t2i.md.")
    parser.add_argument("input", help="PyTorch checkpoint (.bin, .pt, .pth)")
    parser.add_argument("output", help="safetensors file to write")
    parser.add_argument("--num-heads", type=int, help="write __metadata__ num_heads (needed only without q_norm)")
    parser.add_argument("--new-condition", choices=NEW_CONDITIONS,
                        help="write __metadata__ new_condition (tim assumes t-r, the released value, without it)")
    parser.add_argument("--dtype", choices=("keep", "float32", "bfloat16", "float16"), default="keep",
                        help="store floating tensors in this dtype (default: as in the checkpoint)")
    parser.add_argument("--key", help="take the state dict from this top-level key (default: ema, then model, ...)")
    parser.add_argument("--drop", action="append", default=[], metavar="PREFIX",
                        help="leave out tensors whose name starts with PREFIX (repeatable; reported)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="load with weights_only=False (runs pickled code: only for files you trust)")
    args = parser.parse_args(argv)
    if args.num_heads is not None and args.num_heads < 1:
        parser.error("--num-heads must be >= 1")
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        parser.error("input and output are the same file")
    return args


def main(argv: list[str] | None = None) -> None:
    convert(parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
