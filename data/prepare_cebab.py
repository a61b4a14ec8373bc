"""Fetch CEBaB from the Hugging Face hub into data/cebab/{train,dev,test}.csv (needs network).

The files follow the papers' CSV format (see data/README.md) with the four human-annotated
concepts. The six machine-annotated concepts of the C3M/SparseCBM papers are not on the hub;
for `data=cebab_aug` point `data.root` at a folder holding them.

Usage: python data/prepare_cebab.py [--out data/cebab] [--split-source train_exclusive]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

COLUMNS = ["description", "review_majority", "food_aspect_majority", "ambiance_aspect_majority",
           "service_aspect_majority", "noise_aspect_majority"]


def main() -> None:
    import datasets

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "cebab"))
    ap.add_argument("--split-source", default="train_exclusive", choices=["train_exclusive", "train_inclusive"])
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, hub_split in (("train", args.split_source), ("dev", "validation"), ("test", "test")):
        ds = datasets.load_dataset("CEBaB/CEBaB", split=hub_split)
        missing = [c for c in COLUMNS if c not in ds.column_names]
        if missing:
            raise SystemExit(f"CEBaB/CEBaB[{hub_split}] lacks columns {missing}; it has {ds.column_names}")
        tmp = out / f"{name}.csv.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for row in ds:
                w.writerow(["" if row[c] is None else str(row[c]) for c in COLUMNS])
        tmp.replace(out / f"{name}.csv")
        print(f"wrote {out / (name + '.csv')} ({len(ds)} rows from {hub_split})")


if __name__ == "__main__":
    main()
