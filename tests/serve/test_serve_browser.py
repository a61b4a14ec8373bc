"""The explorer in a real browser: Debian's headless Chromium driven by playwright, against a live server.

Runs in CI (``CI=true``: a missing Chromium fails the test instead of skipping it). Screenshots go to
``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from sparsecbm.serve import Explorer, Limits
from sparsecbm.session import InferenceSession

CHROMIUM = os.environ.get("SPARSECBM_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
TEXT = "The limoncello was cold but the waiter was lovely and the room was quiet."  # limo ##nce ##llo


def _chromium() -> str:
    """Chromium's path; outside CI a missing browser (or playwright) skips, saying why and how to get it."""
    in_ci = os.environ.get("CI", "").lower() == "true"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if in_ci:
            pytest.fail("CI=true but the playwright package is missing: pip install -e '.[dev]'")
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]'); this test never skips "
                    "under CI=true")
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    if in_ci:
        pytest.fail(f"CI=true but {CHROMIUM} is missing: .ci/run installs Debian's chromium (apt-get install chromium)")
    pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium, or SPARSECBM_CHROMIUM=/path/to/chrome); "
                "this test never skips under CI=true")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Checked before the server fixture trains its checkpoints: a skip costs nothing."""
    return _chromium()


@pytest.fixture(scope="module")
def server(serve_ckpts):
    """The app on a free port of 127.0.0.1 in a thread: a sparse model (mask level) compared with a dense one."""
    import uvicorn

    from sparsecbm.serve.app import create_app

    main = InferenceSession.load(serve_ckpts["sparse"])
    explorer = Explorer(main, main.datamodule(), limits=Limits(split_batch_size=4))
    compare = Explorer(InferenceSession.load(serve_ckpts["dense"]))
    app = create_app(explorer, compare)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(url + "/api/info", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield SimpleNamespace(url=url, main=explorer, compare=compare)
    srv.should_exit = True
    thread.join(10)
    sock.close()


def _shown(page, panel: str) -> list[str]:
    return page.locator(f"{panel} .lprob").all_inner_texts()


def test_explorer_in_chromium(chromium, server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    ns, server = server, server.url
    executable = chromium
    info = httpx.get(server + "/api/info").json()
    names = [c["name"] for c in info["concepts"]]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(server + "/")
            expect(page.locator("body[data-ready=true]")).to_have_count(1, timeout=20_000)
            # examples of the split are listed
            expect(page.locator("#examples li")).to_have_count(32)

            page.fill("#text", TEXT)
            page.click("#predict")
            expect(page.locator("#concepts .concept")).to_have_count(len(names))
            api = httpx.post(server + "/api/predict", json={"text": TEXT}).json()
            # concept bars: one button per value, with the predicted probability and a bar of that width
            expect(page.locator("#concepts button.value")).to_have_count(sum(len(c["values"]) for c in info["concepts"]))
            food = next(c for c in api["concepts"] if c["name"] == "food")
            for v, prob in zip(food["values"], food["probs"]):
                button = page.locator(f'button.value[data-concept="food"][data-value="{v}"]')
                assert f"{prob:.4f}" in button.inner_text()
                width = button.locator(".vbar").evaluate("e => e.getBoundingClientRect().width")
                track = button.locator(".vtrack").evaluate("e => e.getBoundingClientRect().width")
                assert width == pytest.approx(prob * track, abs=1.5)
            # token heatmap: one row per concept, one coloured span per word (pieces merged, weights summed) ...
            expect(page.locator("#heatmaps .heatmap")).to_have_count(len(names))
            assert "##nce" in api["tokens"] and len(api["words"]) < len(api["tokens"])
            for c in names:
                expect(page.locator(f'#heatmaps .heatmap[data-concept="{c}"] .tok')).to_have_count(len(api["words"]))
            word = page.locator('#heatmaps .heatmap[data-concept="food"] .tok', has_text="limoncello")
            expect(word).to_have_count(1)
            pieces = next(w["tokens"] for w in api["words"] if w["text"] == "limoncello")
            assert [api["tokens"][i] for i in pieces] == ["limo", "##nce", "##llo"]
            weight = sum(food["token_weights"][i] for i in pieces)
            assert word.get_attribute("title").startswith(f"{weight:.4f} = limo ")
            assert not [t for t in page.locator("#heatmaps .tok").all_inner_texts() if t.startswith("##")]
            # ... and the word pieces on request
            page.select_option("#token-unit", "tokens")
            for c in names:
                expect(page.locator(f'#heatmaps .heatmap[data-concept="{c}"] .tok')).to_have_count(len(api["tokens"]))
            expect(page.locator('#heatmaps .heatmap[data-concept="food"] .tok', has_text="##nce")).to_have_count(1)
            page.select_option("#token-unit", "words")
            before = _shown(page, "#label-after")
            assert before == [f"{p:.4f}" for p in api["label_probs"]] == _shown(page, "#label-before")

            # click a concept value: the shown label distribution becomes the one the API returns for that edit
            target = next(v for v in food["values"] if v != food["predicted"])
            page.click(f'button.value[data-concept="food"][data-value="{target}"]')
            expect(page.locator("#edit-summary")).to_have_text("1 concept set")
            edit = httpx.post(server + "/api/intervene", json={"text": TEXT, "set": {"food": target}}).json()
            expected = [f"{p:.4f}" for p in edit["after"]["label_probs"]]
            expect(page.locator("#label-after .lprob")).to_have_text(expected)
            assert expected != before  # the edit moved the label distribution
            assert _shown(page, "#label-before") == before
            expect(page.locator(f'button.value.set[data-concept="food"][data-value="{target}"]')).to_have_count(1)
            expect(page.locator('.concept.edited[data-concept="food"]')).to_have_count(1)
            # the bars show the edited distribution (the set value's bar full), as the numbers after "→" do
            edited_food = next(c for c in edit["after"]["concepts"] if c["name"] == "food")
            assert edited_food["probs"][food["values"].index(target)] > 0.99
            for v, prob in zip(food["values"], edited_food["probs"]):
                button = page.locator(f'button.value[data-concept="food"][data-value="{v}"]')
                assert f"→ {prob:.4f}" in button.inner_text()
                width = button.locator(".vbar").evaluate("e => e.getBoundingClientRect().width")
                track = button.locator(".vtrack").evaluate("e => e.getBoundingClientRect().width")
                assert width == pytest.approx(prob * track, abs=1.5)

            # mask level: fix food's subnetwork toward the target; its milliseconds are shown
            page.select_option("#mask-concept", "food")
            page.select_option("#mask-value", target)
            page.click("#mask-run")
            expect(page.locator("#mask-ms")).to_contain_text("mask edit")
            ms = float(page.locator("#mask-ms").inner_text().split()[-2])
            assert ms > 0
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "explorer_text.png"), full_page=True)

            # drag a soft distribution: the shown label probabilities follow the API's answer for it
            page.click('button.soft-toggle[data-concept="service"]')
            slider = page.locator('input[data-soft="service"][data-index="0"]')
            with page.expect_request(lambda r: r.url.endswith("/api/intervene")) as sent:
                slider.fill("0.9")  # sets the value and fires change, as releasing a dragged slider does
            body = sent.value.post_data_json
            assert set(body["set"]) == {"food", "service"} and sum(body["set"]["service"]) == pytest.approx(1)
            assert body["set"]["service"][0] == pytest.approx(max(body["set"]["service"]))
            expect(page.locator("#edit-summary")).to_have_text("2 concepts set")
            both = httpx.post(server + "/api/intervene", json=body).json()
            expect(page.locator("#label-after .lprob")).to_have_text([f"{p:.4f}" for p in both["after"]["label_probs"]])

            # reset: back to the model's own prediction
            page.click("#reset")
            expect(page.locator("#edit-summary")).to_have_text("(no edit)")
            expect(page.locator("#label-after .lprob")).to_have_text(before)

            # an example's prediction belongs to the text shown: the panel is cleared on a click, and an older
            # request that answers last (example 0 held back 1.5 s) never replaces the newer one (example 1)
            real_predict = ns.main.predict

            def held_back(text=None, example=None):
                if example == 0:
                    time.sleep(1.5)
                return real_predict(text, example)

            ns.main.predict = held_back
            try:
                page.click('#examples li[data-index="0"]')
                expect(page.locator("#prediction")).to_be_hidden()
                page.click('#examples li[data-index="1"]')
                expect(page.locator('#prediction[data-example="1"]')).to_be_visible()
                page.wait_for_timeout(2500)  # example 0's answer has arrived meanwhile
                ex1 = httpx.post(server + "/api/predict", json={"example": 1}).json()
                expect(page.locator('#prediction[data-example="1"]')).to_be_visible()
                assert page.input_value("#text") == ex1["text"]
                assert _shown(page, "#label-before") == [f"{p:.4f}" for p in ex1["label_probs"]]
                expect(page.locator("#label-summary")).to_contain_text(f"true {ex1['true_label']}")
            finally:
                ns.main.predict = real_predict
            # editing the text marks the shown prediction as belonging to the previous text
            page.fill("#text", ex1["text"] + " And the bread was stale.")
            expect(page.locator("#stale-note")).to_be_visible()
            expect(page.locator("#prediction.stale")).to_have_count(1)

            # an example with human counterfactuals (tagged in the list): per pair, the label distribution with the
            # edited concept set beside the model's on the human-edited text and the ICaCE error, as the API says
            with_cf = httpx.get(server + "/api/counterfactuals").json()["examples"]
            cf_index = with_cf[0]
            expect(page.locator(f'#examples li[data-index="{cf_index}"] .tag.cf')).to_have_count(1)
            page.click(f'#examples li[data-index="{cf_index}"]')
            cf = httpx.get(server + f"/api/counterfactuals/{cf_index}").json()["pairs"]
            expect(page.locator("#cf-panel .cf-pair")).to_have_count(len(cf))
            for k, pair in enumerate(cf):
                card = page.locator(f'#cf-panel .cf-pair[data-pair="{k}"]')
                for column in ("before", "intervened", "counterfactual"):
                    expect(card.locator(f"td.cf-{column}")).to_have_text([f"{x:.4f}" for x in pair[column]])
                expect(card.locator(".cf-l2")).to_have_text(f"{pair['errors']['l2']:.4f}")
            page.screenshot(path=str(ARTIFACTS / "explorer_counterfactual.png"), full_page=True)
            plain = next(i for i in range(32) if i not in with_cf)
            page.click(f'#examples li[data-index="{plain}"]')  # an example without one: no panel
            expect(page.locator(f'#prediction[data-example="{plain}"]')).to_be_visible()
            expect(page.locator("#cf-panel")).to_be_hidden()

            page.click('#tabs button[data-view="subnetworks"]')
            expect(page.locator("#subnetworks table.grid").first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "explorer_subnetworks.png"), full_page=True)
            # the Dataset view: a progress bar while the background pass runs (slowed here), then the results
            slow = ns.main.model.backbone.model.register_forward_hook(lambda *_: time.sleep(0.1))
            try:
                page.click('#tabs button[data-view="dataset"]')
                expect(page.locator("#dataset .progress progress")).to_be_visible()
                expect(page.locator("#dataset .progress")).to_contain_text("of 32")
                page.screenshot(path=str(ARTIFACTS / "explorer_dataset_progress.png"))
                expect(page.locator("#dataset svg polyline")).to_have_count(4, timeout=60_000)  # one curve per policy
            finally:
                slow.remove()
            expect(page.locator("#dataset .progress")).to_have_count(0)
            page.screenshot(path=str(ARTIFACTS / "explorer_dataset.png"), full_page=True)
            page.click('#tabs button[data-view="compare"]')
            expect(page.locator("#compare .labels")).to_have_count(2)
            # each side names its run folder and checkpoint, and which side is which
            titles = page.locator("#compare .model-title").all_inner_texts()
            assert titles == [info["title"], info["compare"]["title"]] and titles[0] != titles[1]
            assert all(t.endswith("/best.ckpt") for t in titles)
            assert page.locator("#compare .role").all_inner_texts() == ["A · main", "B · compare"]
            assert not errors, errors
            assert all(u.startswith(server) for u in requests), [u for u in requests if not u.startswith(server)]
        finally:
            browser.close()
    assert (ARTIFACTS / "explorer_text.png").stat().st_size > 10_000
    shutil.copy(ARTIFACTS / "explorer_text.png", tmp_path / "explorer_text.png")
