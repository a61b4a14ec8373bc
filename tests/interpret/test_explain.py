"""Explain entry point on a smoke-trained tiny checkpoint: JSON round trip, HTML report in headless Chromium, CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from conftest import TINY_BERT, compose_cfg

from sparsecbm.interpret.explanation import ExplanationSet

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def gated_ckpt(tmp_path_factory):
    from sparsecbm.train import train

    out = tmp_path_factory.mktemp("train")
    train(compose_cfg(out, ["experiment=smoke", "cbm.tokens=gates", "cbm.label_sparsity=topk", *TINY_BERT]))
    return out / "checkpoints" / "best.ckpt"


def test_explain_split_with_faithfulness(gated_ckpt, tmp_path):
    from sparsecbm.explain import run

    cfg = compose_cfg(
        tmp_path,
        [
            f"ckpt_path={gated_ckpt}",
            "n=5",
            "batch_size=4",
            "faithfulness=true",
            "methods=[ours,gradxinput,ablation]",
            "concepts=round_robin",
            "pngs=1",
        ],
        "explain",
    )
    result = run(cfg)
    es = ExplanationSet.load(tmp_path / "explanations.json")
    assert len(es) == 5 and es.method == "gates" and es.subnetwork is None
    assert 0 <= es.token_gates["kept_fraction"] <= 1 and es.token_gates["budget"] == 0.2
    assert all(len(used) == 2 for used in es.label_layer.values())  # topk k=2 per label
    e = es[0]
    assert [c.name for c in e.concepts] == ["food", "ambiance", "service", "noise"]
    assert all(len(c.token_scores) == len(e.tokens) == len(c.gates) for c in e.concepts)
    assert (
        abs(sum(e.label_probs) - 1) < 1e-5
        and e.predicted_label in e.label_values
        and e.true_label is not None
    )
    assert set(e.contributions) == {"food", "ambiance", "service", "noise"}
    table = json.loads((tmp_path / "faithfulness.json").read_text())["table"]
    assert set(table) == {"ours (gates)", "gradxinput", "ablation"}
    assert all(row["n"] == 5 and row["seconds_per_pair"] >= 0 for row in table.values())
    assert "| ablation |" in (tmp_path / "faithfulness.md").read_text()
    assert (tmp_path / "tokens_0.png").is_file() and (tmp_path / "label_layer.png").is_file()
    assert result["report"].endswith("report.html")


def test_json_schema_round_trip(gated_ckpt, tmp_path):
    from sparsecbm.explain import run

    run(
        compose_cfg(
            tmp_path,
            [f"ckpt_path={gated_ckpt}", "text=[the food was great but the waiter was rude]", "report=false"],
            "explain",
        )
    )
    raw = json.loads((tmp_path / "explanations.json").read_text())
    es = ExplanationSet.from_dict(raw)
    assert es.to_dict() == raw and es.schema_version == 1
    es.save(tmp_path / "again.json")
    assert ExplanationSet.load(tmp_path / "again.json") == es
    assert "waiter" in es[0].tokens and es[0].text == "the food was great but the waiter was rude"
    assert "food=" in es.show(0)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(gated_ckpt, tmp_path):
    from sparsecbm.explain import run

    text = "the pasta was superb and the room was quiet"
    run(compose_cfg(tmp_path, [f"ckpt_path={gated_ckpt}", f"text=[{text}]", "method=gradxinput"], "explain"))
    report = tmp_path / "report.html"
    assert not re.search(
        r"(src|href)=['\"]?(https?:)?//", report.read_text()
    )  # nothing fetched from a network
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--dump-dom",
        report.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    for concept in ("food", "ambiance", "service", "noise"):
        assert f'data-concept="{concept}"' in dom
    tokens = re.findall(r'<span class="tok"[^>]*>([^<]*)</span>', dom)
    assert {"pasta", "superb", "quiet"} <= set(tokens)
    assert "Label layer" in dom and "subnetwork" in dom


def test_explain_sparse_model_has_subnetwork_level(tmp_path):
    """With per-concept subnetworks, every explanation carries the subnetwork level (density + units)."""
    from sparsecbm.explain import run
    from sparsecbm.train import train

    train(compose_cfg(tmp_path / "t", ["experiment=smoke", "trainer.max_epochs=2", "sparsity=head", *TINY_BERT]))
    cfg = compose_cfg(tmp_path / "e", [f"ckpt_path={tmp_path / 't/checkpoints/best.ckpt'}", "n=2", "batch_size=2",
                                       "pngs=0"], "explain")
    run(cfg)
    es = ExplanationSet.load(tmp_path / "e" / "explanations.json")
    assert es.subnetwork["granularity"] == "head" and set(es.subnetwork["density"]) == {
        "food", "ambiance", "service", "noise"}
    e = es[0]
    units = e.subnetwork["units"]["food"]["blocks"]["0"]
    assert units["heads_kept"] == 2 and all(0 <= h < 4 for h, _ in units["heads"])  # 50% of 4 heads
    assert 'class="subnetwork"' in (tmp_path / "e" / "report.html").read_text()
    # the training run's cross-mask matrix and specificity travel into the explanation report
    trained = json.loads((tmp_path / "t" / "results.json").read_text())["subnetworks"]
    assert es.subnetwork["cross_mask"] == trained["cross_mask"] and es.subnetwork["concept_specific"] is True
    report = (tmp_path / "e" / "report.html").read_text()
    assert 'class="cross-mask"' in report and report.count("<th>mask ") == 4


def test_ours_is_the_gates_of_a_gated_model_and_lig_otherwise(gated_ckpt):
    from types import SimpleNamespace

    from sparsecbm.checkpoint import load_model
    from sparsecbm.interpret.attribution import resolve_name

    assert resolve_name("ours", load_model(gated_ckpt)[0]) == "gates"
    assert resolve_name("ours", SimpleNamespace(token_pooler=None)) == "lig"  # most faithful gradient method
    assert resolve_name("ablation", SimpleNamespace(token_pooler=None)) == "ablation"
