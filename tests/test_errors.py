"""Every bad input a user can give ends with exit code 2 and a message naming what is wrong, never a traceback.

The entry points run in-process (their real ``main`` with ``sys.argv`` patched); two run as real
subprocesses (the offline hub message and the exit status the shell sees).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from testkit import ROOT, TINY_BERT, TINY_DATA, compose_cfg
from testkit.runs import call

from sparsecbm.errors import DataError, debug_requested

HEADER = ["description", "review_majority", "food_aspect_majority", "ambiance_aspect_majority",
          "service_aspect_majority", "noise_aspect_majority"]
ROW = ["Great food, loud room.", "4", "Positive", "unknown", "unknown", "Negative"]


def write_csv(folder: Path, rows: list[list[str]], header=HEADER, split="train", **kw) -> Path:
    """Good dev/test files, and ``rows`` as the ``split`` file (written with ``kw`` for open())."""
    folder.mkdir(parents=True, exist_ok=True)
    for s in ("train", "dev", "test"):
        with open(folder / f"{s}.csv", "w", newline="", **(kw if s == split else {"encoding": "utf-8"})) as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows if s == split else [ROW, ROW])
    return folder


def train_argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["experiment=smoke", *TINY_BERT, f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'c'}",
            "callbacks.progress_bar=null", *extra]


# ----------------------------------------------------------------------------------------- data files
def _latin1(d):
    return write_csv(d, [ROW, ["Crème brûlée was great.", "5", "Positive", "unknown", "unknown", "unknown"]],
                     encoding="latin-1")


def _raw(d, text: bytes, name="train.csv"):
    write_csv(d, [ROW])
    (d / name).write_bytes(text)
    return d


HEAD = (",".join(HEADER) + "\n").encode()
DATA_CASES = {
    "latin-1 bytes": (_latin1, [], ["train.csv, line 3, byte 3 of the line", "byte 0xe8 is not valid utf-8",
                                    "data.encoding=latin-1"]),
    "extra field": (lambda d: _raw(d, HEAD + b'ok,4,Positive,unknown,unknown,Negative\n"A, b",3,Positive,x,unknown,unknown,Negative\n'),
                    [], ["train.csv, line 3: 7 fields, more than the 6 columns of the header (line 1)", "must be quoted"]),
    "missing last cell": (lambda d: _raw(d, HEAD + b"ok,4,Positive,unknown,unknown,Negative\nok,4,Positive,unknown,unknown\n"),
                          [], ["train.csv, line 3: 5 fields, fewer than the 6 columns", "an empty cell still needs its ','"]),
    "empty concept cell": (lambda d: write_csv(d, [ROW, ["Fine.", "3", "Positive", "", "unknown", "unknown"]]),
                           ["data.missing_concept=error"],
                           ["train.csv, line 3, column 'ambiance_aspect_majority' (concept 'ambiance'): the value is empty",
                            "pass data.missing_concept=unknown"]),
    "semicolon delimiter": (lambda d: _raw(d, (";".join(HEADER) + "\nok;4;Positive;unknown;unknown;Negative\n").encode()),
                            [], ["train.csv, line 1: the header is a single column", "looks semicolon-separated (';'): pass data.delimiter=semicolon"]),
    "unknown encoding name": (lambda d: write_csv(d, [ROW]), ["data.encoding=klingon"],
                              ["data.encoding='klingon' is not a known text encoding"]),
    "utf-16 file": (lambda d: write_csv(d, [ROW], encoding="utf-16"), [],
                    ["starts with a UTF-16 byte order mark", "data.encoding=utf-16"]),
    "bad quoting": (lambda d: _raw(d, HEAD + b'"unclosed "quote" here,4,Positive,unknown,unknown,Negative\n'), [],
                    ["train.csv, line 2: not valid CSV", "check the quoting"]),
    "duplicate header": (lambda d: write_csv(d, [ROW + ["x"]], header=HEADER + ["description"]), [],
                         ["line 1: the header has duplicate column(s) ['description']"]),
    "label not a class": (lambda d: write_csv(d, [ROW, ["ok", "6", "Positive", "unknown", "unknown", "unknown"]]), [],
                          ["train.csv, line 3, column 'review_majority': label '6' is not one of ['1', '2', '3', '4', '5']"]),
    "unknown concept value": (lambda d: write_csv(d, [["ok", "2", "Tasty", "unknown", "unknown", "unknown"]]), [],
                              ["line 2, column 'food_aspect_majority' (concept 'food'): value 'Tasty' is not known"]),
    "empty text": (lambda d: write_csv(d, [ROW, ["   ", "2", "Positive", "unknown", "unknown", "unknown"]]), [],
                   ["train.csv, line 3, column 'description': text is empty"]),
    "missing column": (lambda d: write_csv(d, [ROW[:5]], header=HEADER[:5]), [],
                       ["missing column(s) ['noise_aspect_majority']", "data.concepts[*].column"]),
    "missing file": (lambda d: (write_csv(d, [ROW]), (d / "dev.csv").unlink(), d)[-1], [], ["data file not found:", "dev.csv"]),
    "missing_concept value": (lambda d: write_csv(d, [ROW]), ["data.missing_concept=sometimes"],
                              ["data.missing_concept='sometimes' is not valid; expected one of ['error', 'unknown']"]),
    "bad delimiter option": (lambda d: write_csv(d, [ROW]), ["data.delimiter=::"], ["data.delimiter='::': expected one character or one of ['comma', 'semicolon', 'tab', 'pipe']"]),
    "gzip file": (lambda d: _raw(d, __import__("gzip").compress(HEAD + b"ok,4,Positive,unknown,unknown,Negative\n")),
                  [], ["train.csv is gzip-compressed, not a text file", "gunzip train.csv", "data.encoding does not apply"]),
    "zip file": (lambda d: _zipped(d), [], ["train.csv is zip-compressed", "unzip train.csv"]),
    "utf-16 without BOM": (lambda d: _raw(d, (HEAD + b"ok,4,Positive,unknown,unknown,Negative\n").decode().encode("utf-16-le")),
                           [], ["train.csv: the file looks UTF-16 (little-endian) without a byte order mark",
                                "pass data.encoding=utf-16-le"]),
    "tsv named csv": (lambda d: _raw(d, ("\t".join(HEADER) + "\nGood, cheap\t4\tPositive\tunknown\tunknown\tNegative\n").encode()),
                      [], ["train.csv, line 1: the header is a single column", "looks tab-separated ('\\t'): pass data.delimiter=tab"]),
}


def _zipped(d):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("train.csv", HEAD + b"ok,4,Positive,unknown,unknown,Negative\n")
    return _raw(d, buf.getvalue())


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_file(case, tmp_path, monkeypatch, capsys):
    from sparsecbm.train import main

    make, extra, expected = DATA_CASES[case]
    folder = make(tmp_path / "data")
    err = call(main, train_argv(tmp_path, f"data.root={folder}", *extra), monkeypatch, capsys)
    for part in expected:
        assert part in err, (part, err)


def _jsonl_folder(d: Path, lines: list[str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    good = json.dumps({"text": "cheap and good", "label": 1, "price": "Positive"})
    for split in ("train", "dev", "test"):
        (d / f"{split}.jsonl").write_text("\n".join(lines if split == "train" else [good]) + "\n")
    return d


JSONL_CASES = {
    "missing concept key": ([json.dumps({"text": "a", "label": 1, "price": "Positive"}), json.dumps({"text": "b", "label": 0})],
                            ["train.jsonl, line 2, column 'price' (concept 'price'): the value is missing"]),
    "invalid json line": ([json.dumps({"text": "a", "label": 1, "price": "Positive"}), '{"text": "b", "label": '],
                          ["train.jsonl, line 2, column 24: not valid JSON"]),
    "nested value": ([json.dumps({"text": "a", "label": [1], "price": "Positive"})],
                     ["train.jsonl, line 1, key 'label': expected a string or number, got a JSON array"]),
    "not an object": (["[1, 2, 3]"], ["train.jsonl, line 1: expected a JSON object"]),
    "missing label key": ([json.dumps({"text": "a", "price": "Positive"}), json.dumps({"text": "a", "label": 1, "price": "Positive"})],
                          ["train.jsonl, line 1: the label field 'label' is missing"]),
}


@pytest.mark.parametrize("case", list(JSONL_CASES))
def test_bad_jsonl_file(case, tmp_path, monkeypatch, capsys):
    from sparsecbm.train import main

    lines, expected = JSONL_CASES[case]
    folder = _jsonl_folder(tmp_path / "j", lines)
    err = call(main, train_argv(tmp_path, "data=csv", f"data.root={folder}",
                                "data.files={train: train.jsonl, dev: dev.jsonl, test: test.jsonl}",
                                "data.label.values=[0,1]", "data.concepts=[{name: price, column: price}]",
                                "data.limit=null"), monkeypatch, capsys)
    for part in expected:
        assert part in err, (part, err)


def test_bom_is_transparent_and_line_numbers_are_file_lines(tmp_path, cfg_factory):
    from hydra.utils import instantiate

    folder = write_csv(tmp_path / "d", [ROW, ["Multi\nline\nreview", "2", "Negative", "unknown", "unknown", "unknown"],
                                        ["ok", "9", "Positive", "unknown", "unknown", "unknown"]], encoding="utf-8-sig")
    assert (folder / "train.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    dm = instantiate(cfg_factory([f"data.root={folder}", "data.max_length=32"]).data)
    # the BOM is not part of 'description'; the bad row starts on line 6 (the review before it spans 3 lines)
    with pytest.raises(DataError, match=r"train.csv, line 6, column 'review_majority': label '9'"):
        dm.setup()


def test_missing_concept_unknown_reads_empty_cells(tmp_path, cfg_factory):
    from hydra.utils import instantiate

    folder = write_csv(tmp_path / "d", [ROW, ["Fine.", "3", "Positive", "", "unknown", "unknown"]])
    dm = instantiate(cfg_factory([f"data.root={folder}", "data.max_length=32", "data.missing_concept=unknown"]).data)
    dm.setup()
    assert dm.raw["train"].concepts == [[1, 2, 2, 0], [1, 2, 2, 2]]


def test_semicolon_file_loads_with_the_hinted_delimiter(tmp_path, cfg_factory):
    from hydra.utils import instantiate

    folder = tmp_path / "d"
    folder.mkdir()
    for s in ("train", "dev", "test"):
        (folder / f"{s}.csv").write_text(";".join(HEADER) + "\nGreat, really;4;Positive;unknown;unknown;Negative\n")
    dm = instantiate(cfg_factory([f"data.root={folder}", "data.max_length=32", "data.delimiter=semicolon"]).data)
    dm.setup()
    assert dm.raw["dev"].texts == ["Great, really"] and dm.raw["dev"].concepts == [[1, 2, 2, 0]]


# ----------------------------------------------------------------------------------------- config
CONFIG_CASES = {
    "optimized_metric on test": (["optimized_metric=test/label/f1"], ["is a test-split metric", "val/label/f1"]),
    "optimized_metric unknown": (["optimized_metric=val/label/auc"], ["optimized_metric='val/label/auc' is not a validation metric"]),
    "unknown key": (["learning_rate=0.1"], ["Could not override 'learning_rate'", "Key 'learning_rate' is not in struct"]),
    "unknown group option": (["cbm=fancy"], ["Could not find 'cbm/fancy'"]),
    "malformed override": (["trainer.max_epochs=[1,"], ["could not parse the command-line override 'trainer.max_epochs=[1,'"]),
    "accelerator name": (["accelerator=tpu"], ["accelerator='tpu' is not valid; expected one of ['auto', 'cpu', 'gpu', 'cuda']"]),
    "resume without checkpoint": (["ckpt_path=last"], ["cannot resume: checkpoint", "pass hydra.run.dir=<the interrupted run>"]),
    "cbm option out of range": (["cbm.residual_drop_prob=1.5"], ["error: cbm.residual_drop_prob=1.5 is not valid; expected a value in [0, 1]"]),
    "cbm option value": (["cbm.label_class_weight=inverse"], ["cbm.label_class_weight='inverse' is not valid"]),
}
if not torch.cuda.is_available():
    CONFIG_CASES["gpu without CUDA"] = (["accelerator=gpu"], ["accelerator=gpu, but torch sees no CUDA device"])


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_train_config(case, tmp_path, monkeypatch, capsys):
    from sparsecbm.train import main

    extra, expected = CONFIG_CASES[case]
    err = call(main, train_argv(tmp_path, *extra), monkeypatch, capsys)
    for part in expected:
        assert part in err, (part, err)


def test_debug_true_shows_the_traceback(tmp_path, monkeypatch):
    from sparsecbm.errors import ConfigError
    from sparsecbm.train import main

    monkeypatch.setattr(sys, "argv", ["prog", *train_argv(tmp_path, "optimized_metric=test/label/f1", "debug=true")])
    assert debug_requested()
    with pytest.raises(ConfigError, match="test-split metric"):
        main()


# ----------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A tiny concept model and a tiny standard model (1 epoch each)."""
    from sparsecbm.train import train

    out = {}
    for name, extra in (("cbm", []), ("standard", ["cbm=standard"])):
        d = tmp_path_factory.mktemp(name)
        train(compose_cfg(d, ["experiment=smoke", *TINY_BERT, "test=false", *extra]))
        out[name] = d / "checkpoints" / "best.ckpt"
    return out


def _truncated(ckpts, d):
    data = ckpts["cbm"].read_bytes()
    (d / "t.ckpt").write_bytes(data[: len(data) // 2])
    return d / "t.ckpt"


def _other_format(ckpts, d):
    ckpt = torch.load(ckpts["cbm"], map_location="cpu", weights_only=False)
    ckpt["sparsecbm"]["format"] = 99
    torch.save(ckpt, d / "v99.ckpt")
    return d / "v99.ckpt"


def _mismatched(ckpts, d):
    """Weights of another model under this checkpoint's metadata: one key renamed, one tensor reshaped."""
    ckpt = torch.load(ckpts["cbm"], map_location="cpu", weights_only=False)
    state = ckpt["state_dict"]
    key = next(k for k in state if k.startswith("model.label_head"))
    state["model.extra_head.weight"] = state.pop(key)
    shaped = next(k for k in state if k.startswith("model.concept_heads") and k.endswith("weight"))
    state[shaped] = torch.zeros(7, 3)
    torch.save(ckpt, d / "mixed.ckpt")
    return d / "mixed.ckpt"


def _foreign(ckpts, d):
    torch.save({"state_dict": {}}, d / "other.ckpt")
    return d / "other.ckpt"


CKPT_CASES = {
    "not found": ("evaluate", lambda c, d: d / "nope.ckpt", [], ["checkpoint not found:", "nope.ckpt"]),
    "truncated": ("evaluate", _truncated, [], ["t.ckpt is truncated", "killed while writing it", "last.ckpt"]),
    "other format version": ("intervene", _other_format, ["text=hi"], ["has checkpoint format 99", "reads format 1"]),
    "not sparsecbm": ("explain", _foreign, ["text=hi"], ["was not written by sparsecbm"]),
    "weights not matching the metadata": ("evaluate", _mismatched, [],
                                          ["mixed.ckpt: its weights do not match the model its metadata describes",
                                           "missing weights (1): label_head.", "weights the model does not have (1): extra_head.weight",
                                           "weights of another shape (stored vs expected)", "(7, 3)"]),
    "standard model intervene": ("intervene", lambda c, d: c["standard"], ["text=hi", "set={food: Positive}"],
                                 ["'standard' model without concepts", "nothing to intervene"]),
    "standard model explain": ("explain", lambda c, d: c["standard"], ["text=hi"],
                               ["'standard' model without concepts, so it cannot explain concepts"]),
    "mask level on a dense model": ("intervene", lambda c, d: c["cbm"], ["level=mask"], ["trained without sparsity=..."]),
    "evaluate split name": ("evaluate", lambda c, d: c["cbm"], ["splits=[validation]"],
                            ["splits='validation' is not valid; expected one of ['train', 'dev', 'test'] (the validation split is called dev)"]),
    "explain split name": ("explain", lambda c, d: c["cbm"], ["split=val"], ["split='val' is not valid"]),
    "intervene split name": ("intervene", lambda c, d: c["cbm"], ["split=holdout"], ["split='holdout' is not valid"]),
    "missing ckpt_path": ("evaluate", None, [], ["missing a required option: pass ckpt_path=..."]),
    "the removed data_root option": ("evaluate", lambda c, d: c["cbm"], ["data_root=/elsewhere"],
                                     ["Could not override 'data_root'"]),
    "data with other concepts": ("evaluate", lambda c, d: c["cbm"], ["data=imdb_c", f"data.root={TINY_DATA}"],
                                 ["data 'imdb_c' has concepts", "but the checkpoint was trained on concepts"]),
    "unknown set concept": ("intervene", lambda c, d: c["cbm"], ["text=hi", "set={taste: Positive}"], ["unknown concept 'taste'; valid concepts"]),
    "unknown set value": ("intervene", lambda c, d: c["cbm"], ["text=hi", "set={food: Great}"], ["unknown value 'Great' for concept 'food'"]),
    "negative probability": ("intervene", lambda c, d: c["cbm"], ["text=hi", "set={food: [1.2, -0.2, 0]}"],
                             ["'food': probabilities must be non-negative", "-0.2"]),
    "not summing to 1": ("intervene", lambda c, d: c["cbm"], ["text=hi", "set={food: [0.2, 0.2, 0.2]}"],
                         ["'food': probabilities must sum to 1", "0.6"]),
    "wrong number of probabilities": ("intervene", lambda c, d: c["cbm"], ["text=hi", "set={food: [0.5, 0.5]}"],
                                      ["'food': a soft intervention needs 3 probabilities", "order ['Negative', 'Positive', 'unknown']"]),
    "unknown policy": ("intervene", lambda c, d: c["cbm"], ["policy=best"], ["unknown intervention policy ['best']"]),
    "explain method": ("explain", lambda c, d: c["cbm"], ["text=hi", "method=magic"], ["unknown attribution method 'magic'"]),
}


@pytest.mark.parametrize("case", list(CKPT_CASES))
def test_bad_checkpoint_or_request(case, ckpts, tmp_path, monkeypatch, capsys):
    import importlib

    command, make, extra, expected = CKPT_CASES[case]
    main = importlib.import_module(f"sparsecbm.{command}").main
    argv = [f"hydra.run.dir={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'c'}", *extra]
    if make is not None:
        argv.insert(0, f"ckpt_path={make(ckpts, tmp_path)}")
    err = call(main, argv, monkeypatch, capsys)
    for part in expected:
        assert part in err, (part, err)


def test_tables_and_aggregate_on_a_missing_folder(tmp_path, monkeypatch, capsys):
    from sparsecbm import aggregate, tables

    err = call(tables.main, [str(tmp_path / "none")], monkeypatch, capsys)
    assert "none: no such file or folder" in err
    err = call(aggregate.main, [str(tmp_path / "none")], monkeypatch, capsys)
    assert "none: not found; expected an existing folder (a multirun folder" in err
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text('{"test": ')
    assert "not a readable results.json" in call(tables.main, [str(tmp_path / "r")], monkeypatch, capsys)


def test_label_refit_takes_the_options_every_command_takes(tmp_path, monkeypatch, capsys):
    from sparsecbm.label_refit import main

    err = call(main, ["a.ckpt"], monkeypatch, capsys)  # the old positional spelling is gone
    assert "could not parse the command-line override 'a.ckpt'" in err
    err = call(main, ["ckpt_path=none.ckpt", f"hydra.run.dir={tmp_path}"], monkeypatch, capsys)
    assert "checkpoint not found: none.ckpt" in err


# ----------------------------------------------------------------------------------------- offline hub
def test_offline_hub_fails_without_any_connection(tmp_path, monkeypatch, capsys):
    """HF_HUB_OFFLINE: the cache only, no socket opened, one paragraph naming the commands that fix it."""
    import socket

    from sparsecbm.train import main

    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    err = call(main, [*TINY_BERT, f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'nodata'}",
                      "callbacks.progress_bar=null"], monkeypatch, capsys)
    assert attempts == []
    assert "cannot load the data set 'CEBaB/CEBaB' from the Hugging Face hub" in err
    assert "data.root=DIR" in err and "python data/prepare_cebab.py" in err
    assert len(err.strip().splitlines()) == 2  # the paragraph and the debug hint


def test_unreachable_hub_is_tried_once(tmp_path, monkeypatch, capsys):
    """Online mode without network: one short request, then the same paragraph (no retries)."""
    import urllib.request

    from sparsecbm.train import main

    calls = []

    def unreachable(*args, **kwargs):
        calls.append(kwargs.get("timeout"))
        raise OSError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    err = call(main, [*TINY_BERT, f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'nodata'}",
                      "callbacks.progress_bar=null"], monkeypatch, capsys)
    assert calls == [3.0]
    assert "is not reachable (Name or service not known)" in err and "data.root=DIR" in err


def test_exit_status_seen_by_the_shell(tmp_path):
    """A real process: no traceback on stderr, status 2, the offline paragraph."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf"),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "sparsecbm.train", *TINY_BERT, f"hydra.run.dir={tmp_path / 'run'}",
         f"paths.data_dir={tmp_path / 'nodata'}"], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr
    assert "data.root=DIR" in proc.stderr and "python data/prepare_cebab.py" in proc.stderr
