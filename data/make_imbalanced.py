"""Write an imbalanced-label variant of a CEBaB folder: one class holds a given share of every split.

Used to check that the default model keeps the minority classes (issue 26): on CEBaB the five star
ratings are fairly balanced (the largest class holds 27% of train), so nothing there shows what a
skewed review set does. This script subsamples each split so that ``--majority`` (default ``5``: most
real review sets are skewed towards five stars) holds ``--share`` (default 0.55) of its rows; every
other class keeps its own share relative to the rest (each minority class is thinned by the same
factor), and every row of the majority class is kept. ``no majority`` rows (no label) are dropped.

Dev and test get the same recipe as train, so all three splits share one label distribution: the
failure to fix is a model fitted on a skewed data set and used on the same kind of data (accuracy
then rewards the majority class, macro-F1 the minority ones), and choosing a remedy on a dev split
with another distribution than train's would mix label shift into the comparison.

The selection is seeded (``--seed``) and written with the source's columns in their order, so the same
arguments give byte-identical files. Never writes into the source folder.

Usage:
    python data/make_imbalanced.py --src ../shared/data/cebab --out /tmp/cebab_imb55
    bash run.sh data.root=/tmp/cebab_imb55
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import Counter
from pathlib import Path

SPLITS = ("train", "dev", "test")


def subsample(rows: list[dict], label: str, majority: str, share: float, seed: int) -> list[dict]:
    """Rows with label ``majority`` kept, the others thinned by one common factor so that ``majority``
    holds ``share`` of the result (rounded per class); original order kept.

    Args:
        rows: The split's rows (each a column -> cell mapping).
        label: The label column.
        majority: The label value to make the majority.
        share: Its target share in ``(0, 1)``.
        seed: Seed of the per-class draw.

    Returns:
        The kept rows, in their original order.
    """
    if not 0.0 < share < 1.0:
        raise SystemExit(f"--share must be in (0, 1), got {share}")
    by_class: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_class.setdefault(r[label], []).append(i)
    if majority not in by_class:
        raise SystemExit(f"--majority {majority!r} does not occur in column {label!r}; values: {sorted(by_class)}")
    n_major = len(by_class[majority])
    n_rest = sum(len(v) for c, v in by_class.items() if c != majority)
    target_rest = n_major * (1.0 - share) / share
    if target_rest > n_rest:
        raise SystemExit(f"class {majority!r} already holds {n_major / (n_major + n_rest):.3f} >= {share}: "
                         "nothing to subsample; pick a larger --share or another --majority")
    factor = target_rest / n_rest
    rng = random.Random(seed)
    keep = set(by_class[majority])
    for c in sorted(by_class):
        if c != majority:
            idx = by_class[c]
            keep.update(rng.sample(idx, round(len(idx) * factor)))
    return [r for i, r in enumerate(rows) if i in keep]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", required=True, help="folder with train.csv, dev.csv, test.csv (CEBaB format)")
    ap.add_argument("--out", required=True, help="folder to write (created; must not be --src)")
    ap.add_argument("--label", default="review_majority")
    ap.add_argument("--skip", default="no majority", help="label value of rows to drop")
    ap.add_argument("--majority", default="5")
    ap.add_argument("--share", type=float, default=0.55)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    src, out = Path(args.src), Path(args.out)
    if src.resolve() == out.resolve():
        raise SystemExit("--out must differ from --src (the source files are never rewritten)")
    out.mkdir(parents=True, exist_ok=True)
    summary = {"source": str(src), "majority": args.majority, "share": args.share, "seed": args.seed, "splits": {}}
    for i, split in enumerate(SPLITS):
        with open(src / f"{split}.csv", newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns, rows = list(reader.fieldnames or []), [r for r in reader if r[args.label] != args.skip]
        kept = subsample(rows, args.label, args.majority, args.share, args.seed + i)
        tmp = out / f"{split}.csv.tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows(kept)
        tmp.replace(out / f"{split}.csv")
        counts = Counter(r[args.label] for r in kept)
        summary["splits"][split] = {"rows": len(kept), "from": len(rows),
                                    "counts": dict(sorted(counts.items()))}
        print(f"{split}: {len(kept)} of {len(rows)} rows; classes {dict(sorted(counts.items()))} "
              f"({counts[args.majority] / len(kept):.3f} {args.majority!r})")
    (out / "imbalance.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
