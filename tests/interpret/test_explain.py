"""Explain entry point on a smoke-trained tiny checkpoint: JSON round trip, HTML report in headless Chromium, CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import torch
from testkit import TINY_BERT, compose_cfg

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

    text = "the limoncello and pasta were superb and the room was quiet"
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
    assert {"limoncello", "pasta", "superb", "quiet"} <= set(tokens)  # words, not "limo ##nce ##llo"
    assert not [t for t in tokens if t.startswith("##")]
    assert "Label layer" in dom and "subnetwork" in dom
    # every bar's name is shown whole ("ambiance=Negative", never "ambiance=Negat") and left of its bar
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 900, "height": 900})
        page.goto(report.as_uri())
        boxes = page.eval_on_selector_all(".bars .name", """els => els.map(e => ({text: e.textContent,
            cut: e.scrollWidth > e.clientWidth, right: e.getBoundingClientRect().right,
            next: e.nextElementSibling.getBoundingClientRect().left}))""")
        browser.close()
    assert any(b["text"] == "ambiance=Negative" for b in boxes)
    assert all(not b["cut"] and b["right"] <= b["next"] for b in boxes), [b for b in boxes if b["cut"]]


def test_explain_sparse_model_has_subnetwork_level(tmp_path):
    """With per-concept subnetworks, every explanation carries the subnetwork level (density + units)."""
    from sparsecbm.explain import run
    from sparsecbm.train import train

    train(compose_cfg(tmp_path / "t", ["experiment=smoke", "trainer.max_epochs=2", "sparsity=head", *TINY_BERT]))
    cfg = compose_cfg(tmp_path / "e", [f"ckpt_path={tmp_path / 't/checkpoints/best.ckpt'}", "n=2", "batch_size=2",
                                       "pngs=0", "units=true"], "explain")
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
    # the per-example units only when asked (units=true): by default the example carries the model's density
    run(compose_cfg(tmp_path / "d", [f"ckpt_path={tmp_path / 't/checkpoints/best.ckpt'}", "n=2", "batch_size=2",
                                     "pngs=0", "report=false"], "explain"))
    plain = ExplanationSet.load(tmp_path / "d" / "explanations.json")[0]
    assert plain.subnetwork == {"density": e.subnetwork["density"]}
    assert plain.concepts[0].token_scores == e.concepts[0].token_scores


def test_ours_is_the_gates_of_a_gated_model_and_lig_otherwise(gated_ckpt):
    from types import SimpleNamespace

    from sparsecbm.checkpoint import load_model
    from sparsecbm.interpret.attribution import resolve_name

    assert resolve_name("ours", load_model(gated_ckpt)[0]) == "gates"
    assert resolve_name("ours", SimpleNamespace(token_pooler=None)) == "lig"  # most faithful gradient method
    assert resolve_name("ablation", SimpleNamespace(token_pooler=None)) == "ablation"


@pytest.mark.parametrize("which", ["dense", "sparse"])
def test_lig_of_every_concept_at_once_equals_captum_per_concept(serve_ckpts, which):
    """One forward per step for all concepts gives captum's LayerIntegratedGradients of each concept."""
    from sparsecbm.interpret.attribution import Tokens, get_method
    from sparsecbm.session import InferenceSession

    session = InferenceSession.load(serve_ckpts[which])
    batch, _ = session.tokenize(["The limoncello was cold but the waiter was lovely.", "Loud room, great steak!", "ok"])
    for internal in (None, 16):  # one chunk of steps, and captum's internal batching into several
        method = get_method("lig", Tokens.from_tokenizer(session.tokenizer), n_steps=8, internal_batch_size=internal)
        together = method.attribute_all(session.model, batch)
        for k, scores in enumerate(together):
            alone = method.attribute(session.model, batch, k)
            assert scores.shape == alone.shape and torch.allclose(scores, alone, atol=1e-6), (which, internal, k)
        assert any(float(s.abs().max()) > 0 for s in together)
    # nothing left behind: the embedding hook removed, every parameter's requires_grad as it was
    layer = session.model.backbone.model.get_input_embeddings()
    assert not layer._forward_hooks and all(p.requires_grad for p in session.model.parameters())


def test_gates_of_every_concept_at_once(gated_ckpt):
    from sparsecbm.interpret.attribution import Tokens, get_method
    from sparsecbm.session import InferenceSession

    session = InferenceSession.load(gated_ckpt)
    batch, _ = session.tokenize(["The pasta was cold.", "Loud room, great steak and a lovely waiter!"])
    method = get_method("gates", Tokens.from_tokenizer(session.tokenizer))
    for k, scores in enumerate(method.attribute_all(session.model, batch)):
        assert torch.equal(scores, method.attribute(session.model, batch, k))


def test_split_explanations_keep_the_split_order_and_a_cem_report_is_compact(serve_ckpts, tmp_path):
    """Batches group texts of similar length, the explanations come back in the split's order; the default
    cem model's report summarises the label layer per concept (K x L norms), not per embedding dimension."""
    from PIL import Image

    from sparsecbm.explain import run
    from sparsecbm.session import InferenceSession

    ckpt = serve_ckpts["dense"]  # cbm=cem: concept embeddings
    run(compose_cfg(tmp_path, [f"ckpt_path={ckpt}", "n=7", "batch_size=3", "method=gradxinput", "pngs=1"], "explain"))
    es = ExplanationSet.load(tmp_path / "explanations.json")
    raw = InferenceSession.load(ckpt).datamodule().raw["test"]
    assert [e.text for e in es] == raw.texts[:7]
    lengths = [len(e.tokens) for e in es]
    assert lengths != sorted(lengths)  # the split's order is not the length order: the test can tell
    report = (tmp_path / "report.html").read_text()
    head = report.split("<h2>")[0]
    assert "token gates" not in head and es.token_gates is None  # no gates: not mentioned
    table = report.split("<table class='label-layer'>")[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 4 and table.count("<th>label ") == 5  # header + K concepts, L labels
    assert not re.search(r"\bd\d+ [+-]\d", report)  # no per-dimension weights ("d0 +0.02")
    norm = next(c.norm for c in es.label_layer["1"] if c.concept == "food")
    assert f"{norm:.2f}</td>" in table
    for png in ("label_layer.png", "tokens_0.png"):
        assert Image.open(tmp_path / png).size[0] <= 1500


def test_token_png_of_a_long_text_wraps_within_1500_px(tmp_path):
    from PIL import Image

    from sparsecbm.interpret.explanation import ConceptExplanation, Explanation
    from sparsecbm.interpret.html_report import write_pngs

    tokens = [f"w{i}" for i in range(128)]
    concepts = [ConceptExplanation(name, ["Negative", "Positive"], [0.4, 0.6], "Positive",
                                   [float(i % 7) for i in range(128)]) for name in ("ambiance", "service")]
    e = Explanation("x", tokens, concepts, ["1", "2"], [0.5, 0.5], "1", None)
    (path,) = write_pngs(ExplanationSet([e], "lig"), tmp_path, 1)
    width, height = Image.open(path).size
    assert width <= 1500 and height > 3 * 100  # four lines of 40 tokens or fewer
