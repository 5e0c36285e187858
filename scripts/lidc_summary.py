#!/usr/bin/env python3
"""Markdown tables of the LIDC demonstration (docs/segmentation-lidc.md) from its outputs.

usage: lidc_summary.py SCRATCH_DIR

Reads SCRATCH_DIR/run_{scratch,pretrained}/{metrics.jsonl,run.json} and
SCRATCH_DIR/eval_{scratch,pretrained}.csv (`cads segment evaluate --csv`) and prints:
1. validation Dice per epoch, mean and per class, both runs;
2. the held-out evaluation per class: Dice pooled over the held-out slabs
   (2·Σ|P∩G| / Σ(|P| + |G|), with |P∩G| = Dice·(|P| + |G|)/2 per case), then Dice and HD95 of
   each slab whose reference holds the class. The evaluator's own means also average the slabs
   where both masks are empty (Dice 1 by its rule), which says nothing about a class a slab does
   not contain, so they are not shown here; they are in the CSV.
Standard library only.
"""
import csv
import json
import os
import sys

RUNS = ("scratch", "pretrained")


def metrics(d, run):
    with open(os.path.join(d, f"run_{run}", "metrics.jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]


def names(d):
    with open(os.path.join(d, "run_scratch", "run.json")) as f:
        return json.load(f)["class_names"][1:]


def evaluation(d, run):
    rows = {}
    with open(os.path.join(d, f"eval_{run}.csv")) as f:
        for r in csv.DictReader(f):
            if r["case"] != "mean":
                rows[(r["case"], int(r["label"]))] = r
    return rows


def fmt(v, digits=3):
    return "–" if v is None else f"{v:.{digits}f}"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    classes = names(d)
    m = {run: metrics(d, run) for run in RUNS}
    print("Validation Dice per epoch (scratch / pretrained):\n")
    print("| epoch | mean | " + " | ".join(classes) + " |")
    print("|---" * (len(classes) + 2) + "|")
    for e in range(max(len(m[r]) for r in RUNS)):
        cells = []
        rows = [m[r][e] if e < len(m[r]) else None for r in RUNS]
        cells.append(" / ".join(fmt(r and r["mean_val_dice"]) for r in rows))
        for c in range(len(classes)):
            cells.append(" / ".join(fmt(r and r["val_dice"][c]) for r in rows))
        print(f"| {e} | " + " | ".join(cells) + " |")
    ev = {run: evaluation(d, run) for run in RUNS}
    cases = sorted({case for case, _ in ev["scratch"]})
    print("\nHeld-out slabs, best checkpoint of each run (scratch / pretrained):\n")
    head = "| class | pooled Dice | " + " | ".join(
        f"{c} Dice | {c} HD95 mm" for c in cases) + " |"
    print(head)
    print("|---" * (2 + 2 * len(cases)) + "|")
    for k, name in enumerate(classes, start=1):
        pooled = []
        for run in RUNS:
            inter = total = 0.0
            for case in cases:
                r = ev[run][(case, k)]
                p, g = float(r["predicted_voxels"]), float(r["target_voxels"])
                inter += float(r["dice"]) * (p + g) / 2
                total += p + g
            pooled.append(2 * inter / total if total > 0 else None)
        cells = [" / ".join(fmt(v) for v in pooled)]
        for case in cases:
            rs = [ev[run][(case, k)] for run in RUNS]
            if float(rs[0]["target_voxels"]) == 0:
                cells += ["(absent)", "(absent)"]
                continue
            cells.append(" / ".join(fmt(float(r["dice"])) for r in rs))
            hd = [None if r["hd95_mm"] in ("", "nan") else float(r["hd95_mm"]) for r in rs]
            cells.append(" / ".join(fmt(v, 1) for v in hd))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
