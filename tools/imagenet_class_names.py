#!/usr/bin/env python3
"""Write apps/cli/data/imagenet_classes.txt: the 1000 ImageNet-1k class names, one per line, in
the standard class-index order (line 1 = class 0 = tench ... line 1000 = class 999).

Source: the timm package from PyPI (Apache-2.0), files timm/data/_info/imagenet_synsets.txt
(the 1000 WordNet synset ids in class-index order) and timm/data/_info/imagenet_synset_to_lemma.txt
(synset id, TAB, comma-separated WordNet lemmas). The short name of a class is its first lemma.

Usage (what made the committed file, timm 1.0.31):
  pip download timm==1.0.31 --no-deps -d /tmp/timm_wheel
  python3 tools/imagenet_class_names.py /tmp/timm_wheel/timm-1.0.31-py3-none-any.whl
"""
import pathlib
import sys
import zipfile

INFO = "timm/data/_info/"


def main() -> None:
    wheel = zipfile.ZipFile(sys.argv[1])
    synsets = wheel.read(INFO + "imagenet_synsets.txt").decode("utf-8").split()
    lemmas = {}
    for line in wheel.read(INFO + "imagenet_synset_to_lemma.txt").decode("utf-8").splitlines():
        if line.strip():
            synset, names = line.split("\t", 1)
            lemmas[synset] = names
    if len(synsets) != 1000 or len(set(synsets)) != 1000:
        sys.exit(f"expected 1000 distinct synsets, got {len(synsets)}")
    names = [lemmas[s].split(",")[0].strip() for s in synsets]
    if not all(names) or any("\n" in n or "\t" in n for n in names):
        sys.exit("an empty or multi-line class name")
    out = pathlib.Path(__file__).resolve().parent.parent / "apps/cli/data/imagenet_classes.txt"
    out.write_text("".join(n + "\n" for n in names), encoding="utf-8")
    print(f"wrote {out}: {len(names)} names, first {names[0]!r}, last {names[-1]!r}")


if __name__ == "__main__":
    main()
