"""Data mapping, every bad-input error, dynamic padding and the tokenization cache."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from testkit import CEBAB, TINY_DATA

from sparsecbm.data import CBMDataModule, DataError

HEADER = ["description", "review_majority", "food_aspect_majority", "ambiance_aspect_majority",
          "service_aspect_majority", "noise_aspect_majority"]
GOOD = [
    ["Great food, loud room.", "4", "Positive", "unknown", "", "Negative"],
    ["Cold soup.", "1", "Negative", "no majority", "unknown", "unknown"],
    ["Nobody agreed on this one.", "no majority", "Positive", "Positive", "Positive", "Positive"],
    ["Friendly staff.", "5", "unknown", "unknown", "Positive", "unknown"],
]


def write(folder: Path, rows_by_split: dict[str, list[list[str]]], header=HEADER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        with open(folder / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows_by_split.get(split, GOOD))
    return folder


def datamodule(cfg_factory, root, *extra) -> CBMDataModule:
    cfg = cfg_factory([f"data.root={root}", "data.max_length=32", *extra])
    return instantiate(cfg.data)


def test_mapping(cfg_factory, tmp_path):
    dm = datamodule(cfg_factory, write(tmp_path / "d", {}))
    dm.setup()
    raw = dm.raw["train"]
    assert raw.skipped == 1  # the "no majority" label row
    assert raw.labels == [3, 0, 4]  # "4" -> 3, "1" -> 0, "5" -> 4
    # Negative=0, Positive=1, unknown / no majority / empty = 2
    assert raw.concepts == [[1, 2, 2, 0], [0, 2, 2, 2], [2, 2, 1, 2]]
    assert dm.describe()["skipped"] == {"train": 1, "dev": 1, "test": 1}


@pytest.mark.parametrize(
    "rows, header, message",
    [
        ([["ok", "9", "Positive", "unknown", "unknown", "unknown"]], HEADER,
         r"train.csv, line 2, column 'review_majority': label '9' is not one of \['1', '2', '3', '4', '5'\]"),
        ([["ok", "3", "Tasty", "unknown", "unknown", "unknown"]], HEADER,
         r"train.csv, line 2, column 'food_aspect_majority' \(concept 'food'\): value 'Tasty' is not known; expected one of \['Negative', 'Positive', 'unknown', 'no majority'\]"),
        ([GOOD[0], ["  ", "3", "Positive", "unknown", "unknown", "unknown"]], HEADER,
         r"train.csv, line 3, column 'description': text is empty"),
        ([], HEADER, r"train.csv: split is empty"),
        ([["x", "no majority", "Positive", "unknown", "unknown", "unknown"]], HEADER,
         r"train.csv: split is empty after skipping 1 rows"),
        ([GOOD[0][:5]], HEADER[:5],
         r"train.csv: missing column\(s\) \['noise_aspect_majority'\]"),
        ([GOOD[0]], ["text", *HEADER[1:]],
         r"missing column\(s\) \['description'\]; the file has columns \['text', "),
    ],
    ids=["label", "concept-value", "empty-text", "empty-split", "all-skipped", "missing-column", "misnamed-column"],
)
def test_bad_input_errors(cfg_factory, tmp_path, rows, header, message):
    folder = tmp_path / "bad"
    write(folder, {})
    with open(folder / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    dm = datamodule(cfg_factory, folder)
    with pytest.raises(DataError, match=message):
        dm.setup()


def test_missing_file_and_folder(cfg_factory, tmp_path):
    folder = write(tmp_path / "d", {})
    (folder / "test.csv").unlink()
    with pytest.raises(DataError, match=r"data file not found: .*d/test.csv"):
        datamodule(cfg_factory, folder).setup()
    with pytest.raises(DataError, match=r"data.root '.*nowhere' is not a folder"):
        datamodule(cfg_factory, tmp_path / "nowhere").setup()


def test_concept_count_mismatch(cfg_factory, tmp_path):
    with pytest.raises(DataError, match=r"lists 4 concepts \['food', 'ambiance', 'service', 'noise'\] but num_concepts is 10"):
        datamodule(cfg_factory, write(tmp_path / "d", {}), "data.num_concepts=10").setup()


def test_no_source(cfg_factory, tmp_path):
    cfg = cfg_factory([f"data.default_root={tmp_path / 'absent'}", "data.hub=null"])
    with pytest.raises(DataError, match="no data source"):
        instantiate(cfg.data).setup()


def test_jsonl_and_custom_csv_config(cfg_factory, tmp_path):
    import json

    folder = tmp_path / "j"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        with open(folder / f"{split}.jsonl", "w") as f:
            for text, stars, price in [("cheap and good", 1, "Positive"), ("overpriced", 0, "Negative")]:
                f.write(json.dumps({"text": text, "label": stars, "price_opinion": price}) + "\n")
    cfg = cfg_factory([
        "data=csv", f"data.root={folder}", "data.files={train: train.jsonl, dev: dev.jsonl, test: test.jsonl}",
        "data.label.values=[0,1]", "data.concepts=[{name: price, column: price_opinion}]",
    ])
    dm = instantiate(cfg.data)
    dm.setup()
    assert dm.concept_set.names == ["price"]
    assert dm.raw["dev"].labels == [1, 0] and dm.raw["dev"].concepts == [[1], [0]]


def test_dynamic_padding_and_cache(cfg_factory, tmp_path, monkeypatch):
    dm = datamodule(cfg_factory, TINY_DATA, "data.batch_size=4")
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == int(lengths.max()) < 32  # padded to the batch's longest, not max_length
    assert batch["concepts"].shape == (4, 4)
    cached = list((tmp_path / "cache" / "tokenized").glob("tok-*.pt"))
    assert len(cached) == 3
    # a second datamodule reads the cache and never calls the tokenizer
    dm2 = datamodule(cfg_factory, TINY_DATA)
    import transformers

    monkeypatch.setattr(transformers.PreTrainedTokenizerBase, "__call__", lambda *a, **k: pytest.fail("re-tokenized"))
    dm2.setup()
    assert dm2.splits["train"].data["input_ids"] == dm.splits["train"].data["input_ids"]


def test_parallel_runs_writing_the_same_cache_entry(cfg_factory, tmp_path, monkeypatch):
    """Two runs tokenizing the same split at once (a sweep) each write their own temporary file: the
    second writer finishing first no longer takes the first one's file away mid-write."""
    import sparsecbm.data.datamodule as dmod

    dm = datamodule(cfg_factory, TINY_DATA)
    dm.setup()  # the tokenized splits are now cached; clear them to tokenize again
    cache = tmp_path / "cache" / "tokenized"
    for f in cache.glob("tok-*.pt"):
        f.unlink()
    enc = dm.raw["train"]
    real_save, inner_done = torch.save, []

    def save_then_race(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        if not inner_done:  # another process writes the same entry while this one is between save and rename
            inner_done.append(True)
            assert dm._tokenize_cached(enc)["input_ids"] == out_first_ids

    out_first_ids = dm._tokenize_cached(enc)["input_ids"]
    for f in cache.glob("tok-*.pt"):
        f.unlink()
    monkeypatch.setattr(dmod.torch, "save", save_then_race)
    assert dm._tokenize_cached(enc)["input_ids"] == out_first_ids
    assert inner_done and len(list(cache.glob("tok-*.pt"))) == 1 and not list(cache.glob("*.tmp"))


def test_epoch_seeded_order(cfg_factory):
    from sparsecbm.data.datamodule import EpochSeededSampler

    s = EpochSeededSampler(range(20), seed=3)
    s.set_epoch(1)
    first = list(s)
    s.set_epoch(2)
    assert list(s) != first
    s.set_epoch(1)
    assert list(s) == first and sorted(first) == list(range(20))


@pytest.mark.slow
@pytest.mark.skipif(not CEBAB.is_dir(), reason="needs ../shared/data/cebab")
def test_real_cebab_counts(cfg_factory, tmp_path):
    dm = datamodule(cfg_factory, CEBAB)
    dm.setup()
    assert dm.describe()["sizes"] == {"train": 1463, "dev": 1673, "test": 1685}
    assert dm.describe()["skipped"] == {"train": 292, "dev": 0, "test": 0}
    aug = instantiate(cfg_factory(["data=cebab_aug", f"data.root={CEBAB}"]).data)
    aug.setup()
    assert aug.concept_set.names[4:] == ["cleanliness", "price", "location", "menu_variety", "waiting_time", "waiting_area"]


def test_default_root_used_when_present(cfg_factory, tmp_path, caplog):
    folder = tmp_path / "default"
    shutil.copytree(TINY_DATA, folder)
    cfg = cfg_factory([f"data.default_root={folder}"])
    dm = instantiate(cfg.data)
    with caplog.at_level("INFO"):
        dm.setup()
    assert "using local folder" in caplog.text and "(default location)" in caplog.text
