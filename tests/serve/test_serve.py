"""The explorer's JSON API in-process (FastAPI TestClient): agreement with ``intervene``, caching, errors, no leakage."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from fastapi.testclient import TestClient

from sparsecbm.interpret.intervention import intervene
from sparsecbm.serve import Explorer, Limits
from sparsecbm.serve.app import create_app
from sparsecbm.session import InferenceSession

TEXT = "The pasta was cold but the waiter was lovely."


def make_client(ckpt, compare=None, limits=None) -> tuple[TestClient, Explorer]:
    session = InferenceSession.load(ckpt)
    explorer = Explorer(session, session.datamodule(), limits=limits)
    other = Explorer(InferenceSession.load(compare)) if compare else None
    return TestClient(create_app(explorer, other)), explorer


@pytest.fixture(scope="module")
def dense(serve_ckpts):
    return make_client(serve_ckpts["dense"], compare=serve_ckpts["sparse"])


@pytest.fixture(scope="module")
def sparse(serve_ckpts):
    return make_client(serve_ckpts["sparse"])


def finished(client, path, params=None, timeout=120.0):
    """GET ``path`` until the split's background pass is done (202 with progress until then)."""
    import time

    end = time.monotonic() + timeout
    while True:
        r = client.get(path, params=params)
        if r.status_code != 202:
            assert r.status_code == 200, r.text
            return r.json()
        assert r.json()["status"] == "running" and time.monotonic() < end
        time.sleep(0.05)


def probs(pred, concepts):
    """An ``InterventionResult`` prediction as the API's lists."""
    return ([pred.label_probs[v] for v in concepts.label.values],
            {c.name: [pred.concept_probs[c.name][v] for v in c.values] for c in concepts})


def api_probs(view):
    return view["label_probs"], {c["name"]: c["probs"] for c in view["concepts"]}


def test_predict_and_intervene_agree_exactly_with_intervene(dense):
    client, ex = dense
    session, cs = ex.session, ex.concepts
    r = client.post("/api/predict", json={"text": TEXT})
    assert r.status_code == 200
    pred = r.json()
    ref = intervene(session, TEXT)
    assert api_probs(pred) == probs(ref.before, cs)  # exact, not approximate
    assert pred["label"] == ref.before.label and [c["predicted"] for c in pred["concepts"]] == list(ref.before.concepts.values())
    # tokens and the model's own token weights (concept attention): one weight per token, rows sum to 1
    assert pred["tokens"][0] == "[CLS]" and pred["token_weights_kind"] == "attention"
    for c in pred["concepts"]:
        assert len(c["token_weights"]) == len(pred["tokens"]) and sum(c["token_weights"]) == pytest.approx(1, abs=1e-5)
    for spec in [{"food": "Positive", "noise": "unknown"}, {"service": [0.2, 0.5, 0.3]}, {"ambiance": {"Negative": 1}},
                 "{food: Negative}"]:
        r = client.post("/api/intervene", json={"text": TEXT, "set": spec})
        assert r.status_code == 200, r.text
        body, ref = r.json(), intervene(session, TEXT, spec)
        assert api_probs(body["before"]) == probs(ref.before, cs) and api_probs(body["after"]) == probs(ref.after, cs)
        assert body["changed"] == ref.changed() and [e["target"] for e in body["edits"]] == [e.target for e in ref.edits]


def test_long_text_is_truncated_and_says_so(dense):
    client, ex = dense
    short = client.post("/api/predict", json={"text": TEXT}).json()
    long = client.post("/api/predict", json={"text": "the food was great " * 100}).json()
    assert short["truncated"] is False and long["truncated"] is True
    assert len(long["tokens"]) == ex.session.max_length == 32 and long["tokens"][-1] == "[SEP]"


def test_contributions_sum_to_the_label_logit(dense):
    client, ex = dense
    body = client.post("/api/intervene", json={"text": TEXT, "set": {"food": "Negative"}}).json()
    for view, targets in ((body["before"], None), (body["after"], {"food": [1.0, 0.0, 0.0]})):
        from sparsecbm.interpret.intervention import edit_targets, parse_set
        from sparsecbm.interpret.strategies import Bottleneck

        enc = ex.encode(TEXT)
        bn = Bottleneck.from_model(ex.model, enc.outputs, ex.eps)
        t = None if targets is None else edit_targets(parse_set(targets, ex.concepts), ex.concepts, 1)
        logits = bn.label_logits(bn.inputs(t))[0]
        k = view["label_values"].index(view["contributions_of"])
        total = sum(c["contribution"] for c in view["concepts"]) + view["bias"]
        assert total == pytest.approx(float(logits[k]), abs=1e-4)


def test_backbone_runs_once_per_text(dense):
    client, ex = dense
    calls = []
    hook = ex.model.backbone.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        text = "A brand new text about the noisy room."
        client.post("/api/predict", json={"text": text})
        assert len(calls) == 1
        for value in ("Negative", "Positive", "unknown"):
            r = client.post("/api/intervene", json={"text": text, "set": {"noise": value}}).json()
            assert r["cached"] is True and r["ms"]["backbone"] is None
        client.post("/api/predict", json={"text": text})
        assert len(calls) == 1  # every edit and the repeat re-ran only the label head
    finally:
        hook.remove()


@pytest.mark.parametrize("body,status,message", [
    ({"text": TEXT, "set": {"taste": "Positive"}}, 422, "unknown concept 'taste'; valid concepts"),
    ({"text": TEXT, "set": {"food": "Great"}}, 422, "unknown value 'Great' for concept 'food'"),
    ({"text": TEXT, "set": {"food": [0.5, 0.1]}}, 422, "'food': a soft intervention needs 3"),
    ({"text": TEXT, "set": {"food": ["a", "b", "c"]}}, 422, "'food': probabilities must be numbers"),
    ({"text": TEXT, "set": "{food: Positive"}, 422, "is not valid YAML"),
    ({"text": TEXT, "set": [1, 2]}, 422, "set"),
    ({"text": "   "}, 422, "'text' is empty"),
    ({}, 422, "give exactly one of 'text'"),
    ({"text": TEXT, "example": 0}, 422, "give exactly one of 'text'"),
    ({"example": 10_000}, 404, "example 10000 does not exist"),
    ({"text": TEXT, "sett": {}}, 422, "sett: Extra inputs are not permitted"),
    ({"text": 5}, 422, "text: Input should be a valid string"),
])
def test_bad_requests_get_4xx_with_the_reason(dense, body, status, message):
    client, _ = dense
    r = client.post("/api/intervene", json=body)
    assert r.status_code == status and message in r.json()["detail"], r.text


def test_size_and_length_limits(serve_ckpts):
    client, _ = make_client(serve_ckpts["dense"], limits=Limits(max_text_chars=100, max_body_bytes=2000))
    r = client.post("/api/predict", json={"text": "x" * 101})
    assert r.status_code == 413 and "101 characters; the limit is 100" in r.json()["detail"]
    r = client.post("/api/predict", content=json.dumps({"text": "x" * 3000}), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than 2000 bytes" in r.json()["detail"]
    r = client.post("/api/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    assert client.post("/api/predict", json={"text": "x" * 100}).status_code == 200


def test_edits_do_not_leak_between_requests(dense):
    client, _ = dense
    plain = client.post("/api/predict", json={"text": TEXT}).json()
    client.post("/api/intervene", json={"text": TEXT, "set": {"food": "Negative", "service": "Negative"}})
    again = client.post("/api/predict", json={"text": TEXT}).json()
    assert api_probs(again) == api_probs(plain) and not any(c["edited"] for c in again["concepts"])
    # an edit of one request is not applied to another text's or another edit's request
    one = client.post("/api/intervene", json={"text": TEXT, "set": {"noise": "Positive"}}).json()
    assert [e["target"] for e in one["edits"]] == ["noise"]
    assert [c["name"] for c in one["after"]["concepts"] if c["edited"]] == ["noise"]
    assert api_probs(one["before"]) == api_probs(plain)


def test_concurrent_requests_get_their_own_answers(dense):
    client, ex = dense
    texts = [TEXT, "Loud music, great steak.", "Rude staff and a dirty table."]
    values = ["Negative", "Positive", "unknown"]
    expected = {(t, v): api_probs(client.post("/api/intervene", json={"text": t, "set": {"food": v}}).json()["after"])
                for t in texts for v in values}
    ex._cache.clear()  # the threads race on fresh texts too
    results, errors = {}, []

    def worker(i):
        try:
            for j in range(6):
                t, v = texts[(i + j) % 3], values[(i * 2 + j) % 3]
                r = client.post("/api/intervene", json={"text": t, "set": {"food": v}})
                results.setdefault((t, v), []).append(api_probs(r.json()["after"]))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(len(v) for v in results.values()) == 36
    for key, got in results.items():
        assert all(g == expected[key] for g in got)


def test_examples_filters_and_example_truth(dense):
    client, ex = dense
    raw = ex.dm.raw["test"]
    all_ = client.get("/api/examples", params={"limit": 200}).json()
    assert all_["total"] == all_["matched"] == len(raw) == 32
    r = client.get("/api/examples", params={"label": "5", "limit": 200}).json()
    assert r["matched"] == sum(1 for y in raw.labels if y == 4) and all(e["label"] == "5" for e in r["examples"])
    food = ex.concepts.position("food")
    r = client.get("/api/examples", params={"concept": "food", "value": "Positive", "limit": 200}).json()
    assert r["matched"] == sum(1 for c in raw.concepts if c[food] == ex.concepts["food"].index("Positive"))
    wrong = finished(client, "/api/examples", {"wrong_label": "true", "limit": 200})
    right = client.get("/api/examples", params={"wrong_label": "false", "limit": 200}).json()
    assert wrong["matched"] + right["matched"] == 32 and all(e["predicted"] != e["label"] for e in wrong["examples"])
    wc = client.get("/api/examples", params={"wrong_concept": "food", "limit": 200}).json()
    assert all("food" in e["wrong_concepts"] for e in wc["examples"])
    word = raw.texts[0].split()[1].lower()
    q = client.get("/api/examples", params={"q": word, "limit": 200}).json()
    assert q["matched"] == sum(word in t.lower() for t in raw.texts)
    assert client.get("/api/examples", params={"concept": "food"}).status_code == 422
    assert "unknown label '9'" in client.get("/api/examples", params={"label": "9"}).json()["detail"]
    # an example by index: its true values come with the prediction
    pred = client.post("/api/predict", json={"example": 3}).json()
    assert pred["true_label"] == ex.concepts.label.values[raw.labels[3]] and pred["text"] == raw.texts[3]
    assert [c["true"] for c in pred["concepts"]] == [s.values[v] for s, v in zip(ex.concepts, raw.concepts[3])]
    assert client.get("/api/examples/3").json()["text"] == raw.texts[3]


def test_counterfactual_view_sets_the_concept_beside_the_human_edit(dense, tmp_path):
    """/api/counterfactuals/{i}: per human counterfactual of example i, do(C=b) on the review beside the model on
    the edited review, each equal to what /api/intervene and /api/predict answer, and the ICaCE errors between."""
    client, ex = dense
    raw, pairs = ex.dm.raw["test"], ex.dm.counterfactual_pairs("test")
    listing = client.get("/api/counterfactuals").json()
    assert listing["available"] and listing["source"] == "reconstructed" and listing["n_pairs"] == len(pairs) > 0
    assert listing["examples"] == sorted({raw.texts.index(p.base_text) for p in pairs})
    index = listing["examples"][0]
    expected = [p for p in pairs if p.base_text == raw.texts[index]]
    view = client.get(f"/api/counterfactuals/{index}").json()
    assert view["text"] == raw.texts[index] and view["available"] and view["example"] == index
    assert [(p["concept"], p["after_value"], p["counterfactual_text"]) for p in view["pairs"]] == \
        [(p.concept, p.after, p.counterfactual_text) for p in expected]
    own = client.post("/api/predict", json={"example": index}).json()["label_probs"]
    for p in view["pairs"]:
        assert p["labels"] == own_labels(ex) and p["before"] == pytest.approx(own, abs=1e-5)
        edit = client.post("/api/intervene", json={"example": index, "set": {p["concept"]: p["after_value"]}}).json()
        assert p["intervened"] == pytest.approx(edit["after"]["label_probs"], abs=1e-5)
        edited = client.post("/api/predict", json={"text": p["counterfactual_text"]}).json()["label_probs"]
        assert p["counterfactual"] == pytest.approx(edited, abs=1e-5)
        predicted, actual = torch.tensor(p["predicted_change"]), torch.tensor(p["actual_change"])
        assert predicted.tolist() == pytest.approx([a - b for a, b in zip(p["intervened"], p["before"])], abs=1e-6)
        assert actual.tolist() == pytest.approx([a - b for a, b in zip(p["counterfactual"], p["before"])], abs=1e-6)
        assert p["errors"]["l2"] == pytest.approx(float((predicted - actual).norm()), abs=1e-6)
        cos = torch.nn.functional.cosine_similarity(predicted, actual, dim=0)
        assert p["errors"]["cosine"] == pytest.approx(1 - float(cos), abs=1e-5)
        assert p["errors"]["normdiff"] == pytest.approx(abs(float(predicted.norm() - actual.norm())), abs=1e-6)
    # the examples filter and tag
    has = client.get("/api/examples", params={"counterfactual": "true", "limit": 200}).json()
    assert [e["index"] for e in has["examples"]] == listing["examples"] and all(e["counterfactuals"] for e in has["examples"])
    none = client.get("/api/examples", params={"counterfactual": "false", "limit": 200}).json()
    assert none["matched"] == len(raw) - has["matched"] and not any(e["counterfactuals"] for e in none["examples"])
    other = next(i for i in range(len(raw)) if i not in listing["examples"])
    assert client.get(f"/api/counterfactuals/{other}").json()["pairs"] == []
    assert client.get("/api/counterfactuals/999").status_code == 404
    # data without a counterfactuals section: the view says so (and how to get one)
    dm = ex.session.datamodule(str(tmp_path / "tok"))
    dm.counterfactuals = None  # a fresh data module (its own cache folder): no pairs read yet
    bare = TestClient(create_app(Explorer(ex.session, dm))).get("/api/counterfactuals").json()
    assert bare["available"] is False and bare["examples"] == [] and "data=cebab" in bare["reason"]


def own_labels(ex):
    return [str(v) for v in ex.concepts.label.values]


def test_dataset_and_curves(dense):
    client, ex = dense
    d = finished(client, "/api/dataset")
    assert d["status"] == "done" and d["done"] == d["total"] == d["n"] == 32 and sum(map(sum, d["label_confusion"])) == 32
    for c in d["concepts"].values():
        assert sum(map(sum, c["confusion"])) == 32
        assert c["acc"] == pytest.approx(sum(c["confusion"][i][i] for i in range(len(c["values"]))) / 32)
    # the run's results.json (ceiling / leakage) is read from the checkpoint's run folder
    saved = json.loads((ex.session.run_dir / "results.json").read_text())
    assert d["bottleneck"] == saved["test"]["bottleneck"]
    curves = client.get("/api/curves").json()
    assert set(curves["curves"]) == {"random", "uncertainty", "influence", "oracle"}
    # k=0 is the model as it predicts (same batches: the same accuracy the test loop measured)
    assert curves["curves"]["oracle"][0]["acc"] == pytest.approx(d["task"]["acc"])
    assert curves["curves"]["oracle"][0]["acc"] == pytest.approx(saved["test"]["intervention"]["none"]["acc"])


def test_explain_export_and_compare(dense):
    client, ex = dense
    r = client.post("/api/explain", json={"text": TEXT, "method": "attention"}).json()
    pred = client.post("/api/predict", json={"text": TEXT}).json()
    assert r["method"] == "attention" and r["seconds"] >= 0
    for got, own in zip(r["explanation"]["concepts"], pred["concepts"]):  # the same weights (0 on [CLS]/[SEP])
        assert got["token_scores"][1:-1] == pytest.approx(own["token_weights"][1:-1], abs=1e-6)
    lig = client.post("/api/explain", json={"text": TEXT, "method": "lig"}).json()
    assert lig["method"] == "lig" and len(lig["explanation"]["concepts"][0]["token_scores"]) == len(pred["tokens"])
    bad = client.post("/api/explain", json={"text": TEXT, "method": "magic"})
    assert bad.status_code == 422 and "valid methods" in bad.json()["detail"]
    bad = client.post("/api/explain", json={"text": TEXT, "method": "gates"})
    assert bad.status_code == 422 and "does not apply to this model" in bad.json()["detail"]
    from sparsecbm.interpret.explanation import ExplanationSet

    r = client.post("/api/export", json={"text": TEXT, "format": "json", "method": "attention"})
    assert r.status_code == 200 and 'filename="explanations.json"' in r.headers["content-disposition"]
    es = ExplanationSet.from_dict(r.json())
    assert es.method == "attention" and es.explanations[0].text == TEXT and es.label_layer
    html = client.post("/api/export", json={"text": TEXT, "format": "html", "method": "attention"}).text
    assert html.startswith("<!doctype html>") and 'data-concept="food"' in html and "http" not in html.split("<body>")[0]
    assert client.post("/api/export", json={"text": TEXT, "format": "pdf"}).status_code == 422
    cmp = client.post("/api/compare", json={"text": TEXT}).json()
    assert api_probs(cmp["main"]) == api_probs(pred)
    other = app_explorer(client, "compare")
    assert api_probs(cmp["compare"]) == probs(intervene(other.session, TEXT).before, other.concepts)


def app_explorer(client, which):
    return getattr(client.app.state, which)


def test_page_and_static_files_are_local(dense):
    client, _ = dense
    page = client.get("/")
    assert page.status_code == 200 and "<title>sparsecbm explorer</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/counterfactuals.js", "/static/style.css"):
        text = client.get(asset).text
        assert "http://" not in text and "https://" not in text  # nothing from the network
    info = client.get("/api/info").json()
    assert info["concepts"][0] == {"name": "food", "values": ["Negative", "Positive", "unknown"]}
    assert info["compare"]["sparse"] is True and info["mask_level"] is False
    # no endpoint takes a file name
    assert client.post("/api/predict", json={"text": TEXT, "ckpt_path": "/etc/passwd"}).status_code == 422
    assert client.get("/static/../conf/serve.yaml").status_code == 404


def test_dense_model_refuses_mask_level_and_has_no_subnetworks(dense):
    client, _ = dense
    r = client.post("/api/intervene/mask", json={"text": TEXT, "concept": "food", "value": "Positive"})
    assert r.status_code == 400 and "per-concept subnetworks" in r.json()["detail"]
    s = client.get("/api/subnetworks").json()
    assert s["available"] is False and "sparsity=" in s["reason"]


def test_mask_level_fix_restores_the_masks(sparse):
    client, ex = sparse
    editor_masks = lambda: {n: t.mask_units.clone() for n, t in ex.model.backbone.unit_groups().items()}  # noqa: E731
    before_masks = editor_masks()
    plain = client.post("/api/predict", json={"text": TEXT}).json()
    food = next(c for c in plain["concepts"] if c["name"] == "food")
    target = next(v for v in food["values"] if v != food["predicted"])
    r = client.post("/api/intervene/mask", json={"text": TEXT, "concept": "food", "value": target, "portion": 0.2})
    assert r.status_code == 200, r.text
    body = r.json()
    e = body["edit"]
    assert e["concept"] == "food" and e["swapped"] > 0 and e["sparsity_after"] == pytest.approx(e["sparsity_before"])
    assert body["ms"]["mask_edit"] > 0 and body["ms"]["server"] >= body["ms"]["mask_edit"]
    after_food = next(c for c in body["after"]["concepts"] if c["name"] == "food")
    assert after_food["probs"] == pytest.approx(e["after_probs"], abs=1e-5)
    assert food["probs"] == pytest.approx(e["before_probs"], abs=1e-5)
    # the target value's probability rose, and the masks are back as loaded: nothing leaks
    i = food["values"].index(target)
    assert after_food["probs"][i] > food["probs"][i]
    assert all(torch.equal(before_masks[n], m) for n, m in editor_masks().items())
    ex._cache.clear()
    assert api_probs(client.post("/api/predict", json={"text": TEXT}).json()) == api_probs(plain)
    for body, message in [({"concept": "taste", "value": "Positive"}, "unknown concept 'taste'"),
                          ({"concept": "food", "value": "Great"}, "unknown value 'Great' for concept 'food'"),
                          ({"concept": "food", "value": "Positive", "portion": 1.5}, "'portion' must be a number in (0, 1)")]:
        r = client.post("/api/intervene/mask", json={"text": TEXT, **body})
        assert r.status_code == 422 and message in r.json()["detail"]


def test_subnetworks_endpoint(sparse):
    client, ex = sparse
    s = client.get("/api/subnetworks").json()
    assert s["available"] and s["granularity"] == "structured"
    names = ex.concepts.names
    m = s["overlap_matrix"]["mean_jaccard"]
    assert len(m) == len(names) and all(m[i][i] == 1.0 for i in range(len(names)))
    assert all(m[i][j] == m[j][i] and 0 <= m[i][j] <= 1 for i in range(len(names)) for j in range(len(names)))
    for c in names:
        heads = s["concepts"][c]["heads_kept"]
        assert set(heads) == {"0", "1"} and all(len(v) == 4 for v in heads.values())  # tiny_bert: 2 layers x 4 heads
        assert s["concepts"][c]["sparsity"] == pytest.approx(0.5, abs=0.05)
    # the training run's cross-mask matrix (results.json: subnetworks.cross_mask), K x K, with specificity
    saved = json.loads((ex.session.run_dir / "results.json").read_text())["subnetworks"]
    x = s["cross_mask"]
    assert x["matrix"] == saved["cross_mask"] and len(x["matrix"]) == len(names)
    assert all(len(row) == len(names) for row in x["matrix"])
    assert x["specificity"] == saved["specificity"] and set(x["specificity"]) == set(names)


def test_without_data_the_data_views_say_why(serve_ckpts):
    client = TestClient(create_app(Explorer(InferenceSession.load(serve_ckpts["dense"]))))
    assert client.get("/api/info").json()["data"] is None
    for path in ("/api/examples", "/api/examples/0", "/api/dataset", "/api/curves", "/api/counterfactuals",
                 "/api/counterfactuals/0"):
        r = client.get(path)
        assert r.status_code == 404 and "no data: start the server with data.root=DIR" in r.json()["detail"]
    assert client.post("/api/predict", json={"example": 0}).status_code == 404
    assert client.post("/api/predict", json={"text": TEXT}).status_code == 200
    assert client.post("/api/compare", json={"text": TEXT}).status_code == 404
