"""Train the small Gemma-like SentencePiece model of the tokenizer tests and write its goldens.

The model (tests/data/tokenizer/gemma_like.model) is trained here with Python sentencepiece on a
small built-in corpus, with Gemma's framing settings: BPE, byte fallback (every byte of a text the
vocabulary lacks becomes a <0xNN> piece), no dummy prefix, no normalisation, digits split, and
Gemma's special ids <pad> = 0, <eos> = 1, <bos> = 2, <unk> = 3. The goldens
(tests/data/tokenizer/golden.json) are Python sentencepiece's ids for a list of prompts (ASCII,
accents, CJK, emoji, characters outside the corpus, empty, long), framed as the released
encode_prompt frames them (BOS, truncation to max_length, right padding with the pad id, mask).
Deterministic: training is single-threaded on a fixed corpus (seed_sentencepiece_size irrelevant
at this size); `--check` retrains into a temporary folder and compares the ids.
Usage: /tmp/nnvenv/bin/python tools/reference/make_tokenizer_golden.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import sentencepiece as spm

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT = REPO_ROOT / "tests" / "data" / "tokenizer"

CORPUS = [
    "a photo of a red fox sitting in the snow",
    "an astronaut riding a horse on the moon, digital art",
    "a bowl of ramen with chopsticks, studio lighting, 35mm",
    "the quick brown fox jumps over the lazy dog",
    "a watercolor painting of a lighthouse at sunset",
    "portrait of an old man with a white beard, highly detailed",
    "a futuristic city skyline at night with neon lights",
    "two cats playing with a ball of yarn on a wooden floor",
    "café au lait et croissant sur une table en marbre",
    "ein Hund läuft über die grüne Wiese",
    "東京の夜景と桜の花",
    "a cute robot 🤖 holding a flower 🌸",
    "1234567890 numbers and 3.14159 pi",
    "mountains, lakes, forests; rivers & valleys!",
]

PROMPTS = [
    "a red fox in the snow",
    "",
    " leading space and  double  spaces ",
    "café crème brûlée",
    "東京の夜景",
    "robot 🤖 with 🌸 and 🦊",
    "unseen letters: ǅ ẞ Ω ж ק ب",
    "tabs\tand\nnewlines",
    "2026 has 365 days",
    "<bos> is text here, not a control token",
    "an astronaut riding a horse on the moon, digital art, " * 12,
]
MAX_LENGTHS = [16, 256]

TRAIN_ARGS = dict(
    model_type="bpe",
    vocab_size=420,
    character_coverage=1.0,
    byte_fallback=True,
    add_dummy_prefix=False,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    split_digits=True,
    allow_whitespace_only_pieces=True,
    pad_id=0,
    eos_id=1,
    bos_id=2,
    unk_id=3,
    num_threads=1,
    hard_vocab_limit=False,
)


def train(folder: Path) -> Path:
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 4) + "\n", encoding="utf-8")
    prefix = folder / "gemma_like"
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(prefix), **TRAIN_ARGS)
    (folder / "gemma_like.vocab").unlink()
    corpus.unlink()
    return folder / "gemma_like.model"


def frame(sp: spm.SentencePieceProcessor, text: str, max_length: int) -> dict:
    pieces = sp.encode(text)
    ids = ([sp.bos_id()] + pieces)[:max_length]
    length = len(ids)
    ids += [sp.pad_id()] * (max_length - length)
    return {"ids": ids, "mask": [1] * length + [0] * (max_length - length), "length": length,
            "truncated": len(pieces) > max_length - 1}


def goldens(model: Path) -> dict:
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()) == (0, 1, 2, 3)
    # Byte fallback is really exercised: some prompt has a <0xNN> piece.
    byte_pieces = [p for t in PROMPTS for p in sp.encode(t, out_type=str) if p.startswith("<0x")]
    assert byte_pieces, "no prompt needs byte fallback; the test would not cover it"
    cases = [{"prompt": t, "max_length": m, "pieces": sp.encode(t), **frame(sp, t, m)} for t in PROMPTS for m in MAX_LENGTHS]
    return {"generator": "tools/reference/make_tokenizer_golden.py", "sentencepiece": spm.__version__,
            "pad_id": sp.pad_id(), "eos_id": sp.eos_id(), "bos_id": sp.bos_id(), "vocab_size": sp.get_piece_size(),
            "cases": cases}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="retrain in a temporary folder and compare")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = goldens(train(Path(tmp)))
        committed = json.loads((OUT / "golden.json").read_text(encoding="utf-8"))
        same = fresh["cases"] == committed["cases"] and goldens(OUT / "gemma_like.model")["cases"] == committed["cases"]
        print("tokenizer goldens:", "identical" if same else "DIFFERENT")
        return 0 if same else 1
    OUT.mkdir(parents=True, exist_ok=True)
    model = train(OUT)
    data = goldens(model)
    (OUT / "golden.json").write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {model} ({model.stat().st_size} bytes) and {OUT / 'golden.json'} ({len(data['cases'])} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
