"""The inference commands share one set of options (ckpt_path, data.root, seed, accelerator, split) and read
texts of any length: run in-process through their real ``main`` as a user would."""

from __future__ import annotations

import json
import sys

import pytest
from testkit import TINY_BERT, TINY_DATA, compose_cfg

from sparsecbm.session import InferenceSession

LONG = "The pasta was cold and the room was loud. " * 1100  # about 10,000 tokens


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from sparsecbm.train import train

    out = tmp_path_factory.mktemp("train")
    results, objs = train(compose_cfg(out, ["experiment=smoke", *TINY_BERT, "data.max_length=16"]))
    return out / "checkpoints" / "best.ckpt", results, objs["datamodule"]


def run_main(module: str, argv: list[str], monkeypatch):
    import importlib

    monkeypatch.setattr(sys, "argv", ["prog", *argv])
    return importlib.import_module(f"sparsecbm.{module}").main()


def test_truncation_is_counted_in_results_json(ckpt):
    path, results, dm = ckpt
    n_tokens = [len(dm.tokenizer(t)["input_ids"]) for t in dm.raw["test"].texts]
    want = sum(n > dm.max_length for n in n_tokens)
    assert 0 < want < len(n_tokens)  # the fixture has both short and long reviews at max_length=16
    assert results["data"]["truncated"]["test"] == want
    assert results["data"]["max_length"] == 16


def test_evaluate_with_data_root_seed_accelerator(ckpt, tmp_path, monkeypatch):
    path, results, _ = ckpt
    run_main("evaluate", [f"ckpt_path={path}", f"data.root={TINY_DATA}", "accelerator=cpu", "seed=3",
                          "splits=[test]", f"hydra.run.dir={tmp_path}", f"paths.cache_dir={tmp_path / 'c'}"], monkeypatch)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["data"]["sources"]["test"].endswith("cebab_tiny/test.csv")
    assert saved["test"]["label"] == results["test"]["label"]  # the same checkpoint on the same data
    assert saved["evaluate_config"]["seed"] == 3 and saved["data"]["truncated"]["test"] > 0
    log = "".join(f.read_text() for f in tmp_path.glob("*.log"))  # Hydra's job log of this run
    assert "WARNING" in log and "were truncated" in log and "raise data.max_length" in log


def test_intervene_reads_a_10000_token_text(ckpt, tmp_path, monkeypatch, minilm_tokenizer):
    path, _, _ = ckpt
    assert len(minilm_tokenizer(LONG)["input_ids"]) > 10_000
    run_main("intervene", [f"ckpt_path={path}", f"text={LONG}", "set={food: Positive}", f"hydra.run.dir={tmp_path}"],
             monkeypatch)
    saved = json.loads((tmp_path / "intervention.json").read_text())
    assert saved["meta"]["truncated"] is True and saved["meta"]["max_length"] == 16
    assert saved["after"]["concepts"]["food"] == "Positive"
    assert abs(sum(saved["after"]["label_probs"].values()) - 1) < 1e-5


def test_explain_reads_a_10000_token_text(ckpt, tmp_path, monkeypatch):
    path, _, _ = ckpt
    run_main("explain", [f"ckpt_path={path}", f"text={LONG}", "method=gradxinput", "report=false",
                         f"hydra.run.dir={tmp_path}"], monkeypatch)
    e = json.loads((tmp_path / "explanations.json").read_text())["explanations"][0]
    assert len(e["tokens"]) == 16 and all(len(c["token_scores"]) == 16 for c in e["concepts"])


def test_intervene_and_explain_take_data_root(ckpt, tmp_path, monkeypatch):
    path, _, _ = ckpt
    run_main("intervene", [f"ckpt_path={path}", f"data.root={TINY_DATA}", "split=dev", "policy=[oracle]",
                           "plot=false", f"hydra.run.dir={tmp_path / 'i'}", f"paths.cache_dir={tmp_path / 'c'}"],
             monkeypatch)
    curve = json.loads((tmp_path / "i" / "intervention.json").read_text())
    assert curve["meta"]["split"] == "dev" and list(curve["curves"]) == ["oracle"]
    run_main("explain", [f"ckpt_path={path}", f"data.root={TINY_DATA}", "split=dev", "n=3", "method=gradxinput",
                         "report=false", f"hydra.run.dir={tmp_path / 'e'}", f"paths.cache_dir={tmp_path / 'c'}"],
             monkeypatch)
    assert len(json.loads((tmp_path / "e" / "explanations.json").read_text())["explanations"]) == 3


def test_label_refit_is_a_hydra_entry_point(ckpt, tmp_path, monkeypatch):
    from sparsecbm.label_refit import main

    path, results, _ = ckpt
    monkeypatch.setattr(sys, "argv", ["prog", f"ckpt_path={path}", f"data.root={TINY_DATA}", "topk=[1]", "l1=[]",
                                      "steps=5", f"hydra.run.dir={tmp_path}", f"paths.cache_dir={tmp_path / 'c'}"])
    main()
    saved = json.loads((tmp_path / "label_refit.json").read_text())
    assert set(saved) == {"checkpoint (no refit)", "dense refit", "topk k=1 refit"}
    assert saved["topk k=1 refit"]["concepts_per_label"] == [1] * 5
    # the unrefitted head is the checkpoint itself: the test metrics training measured
    assert saved["checkpoint (no refit)"]["test_acc"] == pytest.approx(results["test"]["label"]["acc"], abs=1e-6)
    assert saved["checkpoint (no refit)"]["test_f1"] == pytest.approx(results["test"]["label"]["f1"], abs=1e-6)


def test_every_command_ends_with_what_it_wrote(ckpt, tmp_path, monkeypatch, capsys):
    path, _, _ = ckpt
    common = [f"ckpt_path={path}", f"data.root={TINY_DATA}", f"paths.cache_dir={tmp_path / 'c'}"]
    runs = {
        "evaluate": (["splits=[test]"], {"results": "results.json"}),
        "intervene": (["text=the soup was cold"], {"intervention": "intervention.json"}),
        "intervene split": (["policy=[oracle]"], {"intervention": "intervention.json", "curve": "intervention_curve.png"}),
        "label_refit": (["topk=[1]", "l1=[]", "steps=2"], {"label refits": "label_refit.json"}),
        "explain": (["text=the soup was cold", "method=gradxinput", "pngs=1"],
                    {"explanations": "explanations.json", "report": "report.html"}),
    }
    for name, (extra, files) in runs.items():
        out = tmp_path / name.replace(" ", "_")
        capsys.readouterr()
        run_main(name.split()[0], [*common, *extra, f"hydra.run.dir={out}"], monkeypatch)
        printed = capsys.readouterr().out.strip().splitlines()
        assert printed[-len(files):] == [f"{what}: {out / f}" for what, f in files.items()], (name, printed[-4:])
        assert all((out / f).is_file() for f in files.values())
        if name == "evaluate":  # the header names the model's preset
            assert any("evaluate: cem (joint, concept embeddings)" in line for line in printed)


@pytest.mark.parametrize("preset,title", [
    ("cem", "cem (joint, concept embeddings)"), ("joint", "joint (concept logits)"),
    ("sequential", "sequential (concept logits)"), ("independent", "independent (concept probabilities)"),
    ("strict", "strict (independent, hard concepts)"),
    ("hybrid", "hybrid (joint, concept probabilities, 8-dim residual)"), ("standard", "standard (no concepts)"),
])
def test_cbm_title_names_the_preset(tmp_path, preset, title):
    from sparsecbm.results import cbm_title

    assert cbm_title(compose_cfg(tmp_path, [f"cbm={preset}"]).cbm) == title


def test_inference_session_api(ckpt):
    path, _, _ = ckpt
    session = InferenceSession.from_checkpoint(path, {"root": str(TINY_DATA)}, accelerator="cpu")
    assert session.device == "cpu" and session.max_length == 16
    dm = session.datamodule()
    assert dm.raw["dev"].source.endswith("cebab_tiny/dev.csv") and session.datamodule() is dm
    batch, truncated = session.tokenize(["short", LONG])
    assert batch["input_ids"].shape == (2, 16) and truncated == [False, True]


def test_one_tokenisation_for_intervene_explorer_and_explain(ckpt, tmp_path, monkeypatch):
    """The same text through the intervene command, the explorer and the explain command: identical tokens
    and truncation (all three read it through InferenceSession.tokenize)."""
    from sparsecbm.serve.explorer import Explorer

    path, _, _ = ckpt
    text = "The limoncello was excellent but the room was far too loud for a quiet dinner with friends."
    session = InferenceSession.load(path)
    enc = session.encode([text])
    assert enc.truncated == [True] and len(enc.tokens[0]) == 16
    run_main("intervene", [f"ckpt_path={path}", f"text={text}", f"hydra.run.dir={tmp_path / 'i'}"], monkeypatch)
    run_main("explain", [f"ckpt_path={path}", f"text={text}", "method=gradxinput", "report=false",
                         f"hydra.run.dir={tmp_path / 'e'}"], monkeypatch)
    view = Explorer(session).predict(text)
    explained = json.loads((tmp_path / "e" / "explanations.json").read_text())["explanations"][0]
    intervened = json.loads((tmp_path / "i" / "intervention.json").read_text())
    assert view["tokens"] == explained["tokens"] == enc.tokens[0]
    assert view["truncated"] is True and intervened["meta"]["truncated"] is True
    assert view["label_probs"] == pytest.approx(list(intervened["before"]["label_probs"].values()), abs=1e-6)


def test_loading_for_inference_never_imports_the_training_side(ckpt):
    """A fresh interpreter loads the checkpoint and predicts (with an intervention) without ever importing
    sparsecbm.lit, Lightning's Trainer or an entry point."""
    import subprocess

    from testkit import ROOT

    path, _, _ = ckpt
    script = (
        "import sys, sparsecbm\n"
        "from sparsecbm.interpret import intervene\n"
        f"s = sparsecbm.load({str(path)!r})\n"
        "r = intervene(s, 'The pasta was cold.', {'food': 'Positive'})\n"
        "assert r.after.concepts['food'] == 'Positive'\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('sparsecbm.lit', 'sparsecbm.train', 'sparsecbm.evaluate',"
        " 'lightning.pytorch.trainer')))\n"
        "print('imported:', bad)\n"
        "assert not bad, bad\n"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imported: []" in proc.stdout
