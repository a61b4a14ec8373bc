"""Write data/cebab/{train,dev,test}.csv: CEBaB's human-annotated columns (the copy this repository ships).

CEBaB (Abraham et al., NeurIPS 2022) is CC BY 4.0 (see data/cebab/LICENSE.md). The files keep only the
review text, the review label and the four human-annotated aspect concepts of the train_exclusive /
validation / test splits; the six machine-annotated concepts of the C3M/SparseCBM papers are not
included (for `data=cebab_aug` point `data.root` at a folder holding them).

Usage:
    python data/prepare_cebab.py                    # refresh from the Hugging Face hub (needs network)
    python data/prepare_cebab.py --from DIR         # from local CSVs with these columns (e.g. the papers' files)
    python data/prepare_cebab.py --out DIR --split-source train_inclusive
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Iterable, Mapping
from pathlib import Path

COLUMNS = ["description", "review_majority", "food_aspect_majority", "ambiance_aspect_majority",
           "service_aspect_majority", "noise_aspect_majority"]
#: our split file -> CEBaB's split name on the hub
SPLITS = {"train": "train_exclusive", "dev": "validation", "test": "test"}


def write_split(rows: Iterable[Mapping], columns: list[str], path: Path) -> int:
    """Write ``COLUMNS`` of ``rows`` (every other column dropped) to ``path`` atomically; returns the row count."""
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise SystemExit(f"{path.name}: the source lacks columns {missing}; it has {columns}")
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for row in rows:
            w.writerow(["" if row[c] is None else str(row[c]) for c in COLUMNS])
            n += 1
    tmp.replace(path)
    return n


def from_hub(out: Path, train_split: str) -> None:
    import datasets

    for name, hub_split in {**SPLITS, "train": train_split}.items():
        ds = datasets.load_dataset("CEBaB/CEBaB", split=hub_split)
        n = write_split(ds, list(ds.column_names), out / f"{name}.csv")
        print(f"wrote {out / (name + '.csv')} ({n} rows from CEBaB/CEBaB[{hub_split}])")


def from_folder(src: Path, out: Path) -> None:
    for name in SPLITS:
        with open(src / f"{name}.csv", newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            n = write_split(reader, list(reader.fieldnames or []), out / f"{name}.csv")
        print(f"wrote {out / (name + '.csv')} ({n} rows from {src / (name + '.csv')})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "cebab"))
    ap.add_argument("--from", dest="src", default=None, help="a folder with train/dev/test.csv (no network)")
    ap.add_argument("--split-source", default="train_exclusive", choices=["train_exclusive", "train_inclusive"])
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.src:
        from_folder(Path(args.src), out)
    else:
        from_hub(out, args.split_source)


if __name__ == "__main__":
    main()
