#!/usr/bin/env python3
"""Sums Nsight Compute's per-kernel gpu__time_duration (ncu --csv --print-units base) by kernel
name and prints a table, largest first: calls, total ms, share. Used by scripts/device-run.sh (TIM_PROFILE=1)."""

import csv
import re
import sys
from collections import defaultdict


def short(name: str) -> str:
    name = re.sub(r"\(.*", "", name)  # drop the parameter list
    name = re.sub(r"<.*>", lambda m: "<" + m.group(0)[1:60] + (">" if len(m.group(0)) <= 61 else "...>"), name)
    return name[:110]


def main() -> None:
    lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        sys.exit(f"kernel_times: no ncu CSV table in {sys.argv[1]}")
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for row in csv.DictReader(lines[start:]):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(row["Metric Value"].replace(",", ""))  # ns
        entry = totals[short(row["Kernel Name"])]
        entry[0] += 1
        entry[1] += value * 1e-6
    whole = sum(ms for _, ms in totals.values())
    print(f"{'kernel':<112} {'calls':>6} {'ms':>9} {'share':>6}")
    for name, (calls, ms) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
        print(f"{name:<112} {calls:>6} {ms:>9.3f} {100 * ms / whole:>5.1f}%")
    print(f"{'total':<112} {sum(c for c, _ in totals.values()):>6} {whole:>9.3f}")


if __name__ == "__main__":
    main()
