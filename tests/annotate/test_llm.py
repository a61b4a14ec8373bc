"""The LLM annotator's code path on tiny randomly initialised causal LMs (GPT-2 and Llama configs, the
MiniLM tokenizer; no hub access): shapes, the answer is the argmax of naively computed answer
log-probabilities, the output folder's format, and resuming after an interruption."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from testkit.corpus import BANK, make_corpus

from sparsecbm.annotate.bank import ConceptBank
from sparsecbm.annotate.llm import PROGRESS_DIR, PROMPT, LLMScorer, annotate_folder_llm
from sparsecbm.concepts import ConceptSpec
from sparsecbm.data.schema import read_schema

TINY = {"gpt2": {"vocab_size": 30522, "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 256},
        "llama": {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 256}}
LABEL = {"column": "label", "values": ["bad", "good"], "skip": []}


def tiny_lm(family: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(family, **TINY[family])).eval()


@pytest.fixture(scope="module")
def tokenizer():
    from sparsecbm.models.backbone import load_tokenizer

    return load_tokenizer("minilm")


def naive_logprob(model, prompt_ids: list[int], answer_ids: list[int]) -> float:
    """One unpadded sequence: sum over the answer tokens of log p(token | everything before it)."""
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return float(sum(logp[len(prompt_ids) + k - 1, t] for k, t in enumerate(answer_ids)))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_batched_scores_equal_naive_and_answer_is_their_argmax(family, tokenizer):
    model = tiny_lm(family)
    scorer = LLMScorer(model, tokenizer, batch_size=3, max_length=64)
    answers = scorer.encode_answers(["Negative", "Positive", "unknown", "very mixed feelings"])
    texts = ["The food was tasty.", "Service rude and slow, and the soup was cold. " * 8, "ok", "Fine place!"]
    budget = scorer.max_length - max(len(a) for a in answers)
    prompts = [scorer.encode_prompt(PROMPT, t, budget, concept="food", description="the food",
                                    values="Negative, Positive, unknown") for t in texts]
    assert all(len(p) <= budget for p in prompts) and len(prompts[1]) == budget  # the long text was cut
    scores = scorer.score(prompts, answers)
    assert scores.shape == (4, 4) and scorer.forward_calls == 2  # batches of 3 prompts x 4 answers
    naive = np.array([[naive_logprob(model, p, a) for a in answers] for p in prompts])
    assert np.allclose(scores, naive, atol=1e-4)
    assert (scores.argmax(1) == naive.argmax(1)).all()
    mean = LLMScorer(model, tokenizer, batch_size=8, max_length=64, length_norm=True).score(prompts, answers)
    assert np.allclose(mean, naive / np.array([len(a) for a in answers])[None], atol=1e-4)


def _run(tmp_path, out, tokenizer, **kw):
    human = [ConceptSpec("food", "food_h", ("Negative", "Positive", "unknown"))]
    scorer = LLMScorer(tiny_lm("gpt2"), tokenizer, batch_size=4, max_length=96)
    res = annotate_folder_llm(tmp_path / "data", ConceptBank.from_dict(BANK), out, "text", LABEL, human,
                              scorer=scorer, progress_bar=False, **kw)
    return res, scorer


def _read(out):
    return {s: (out / f"{s}.csv").read_text() for s in ("train", "dev", "test")}


def test_llm_annotation_folder_and_resume(tmp_path, tokenizer, monkeypatch):
    rows = make_corpus(tmp_path / "data", n=9)
    res, scorer = _run(tmp_path, tmp_path / "full", tokenizer)
    # the embedding annotator's format: machine columns, concepts.yaml, annotation.json with agreement
    train = list(csv.DictReader(open(tmp_path / "full" / "train.csv")))
    assert [r["food_h"] for r in train] == [r["food_h"] for r in rows["train"]]
    assert {r["machine_food"] for r in train} <= {"Negative", "Positive", "unknown"}
    assert {r["machine_food_grade"] for r in train} <= {"1", "2", "3", "unknown"}
    schema = read_schema(tmp_path / "full")
    assert schema.sources == {"food": "human", "service": "machine", "food_grade": "machine"}
    saved = json.loads((tmp_path / "full" / "annotation.json").read_text())
    assert saved["provenance"]["annotator"] == "llm" and set(saved["agreement"]) == {"train", "dev", "test"}
    assert 0.0 <= saved["agreement"]["test"]["food"]["accuracy"] <= 1.0
    # 3 splits x 2 concepts x ceil(9 / 4) batches
    assert scorer.forward_calls == 3 * 2 * 3
    # each machine value is the argmax of its row's written answer scores
    progress = next((tmp_path / "full" / PROGRESS_DIR).iterdir()) / "train.jsonl"
    lines = [json.loads(x) for x in progress.read_text().splitlines()]
    names = ["Negative", "Positive", "unknown"]
    by_row = {r["row"]: names[int(np.argmax(r["scores"]))] for r in lines if r["concept"] == "service"}
    assert [by_row[i] for i in range(9)] == [r["machine_service"] for r in train]

    # interrupted after 4 batches: the rerun computes only what is missing, and writes the same folder
    calls = {"n": 0}
    real = LLMScorer.score

    def flaky(self, prompts, answers):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated interruption")
        return real(self, prompts, answers)

    monkeypatch.setattr(LLMScorer, "score", flaky)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, tmp_path / "resumed", tokenizer)
    monkeypatch.setattr(LLMScorer, "score", real)
    part = next((tmp_path / "resumed" / PROGRESS_DIR).iterdir()) / "train.jsonl"
    with open(part, "a") as f:
        f.write('{"concept": "service", "row": 0, "sco')  # a line cut short by the crash
    _, again = _run(tmp_path, tmp_path / "resumed", tokenizer)
    assert again.forward_calls == 3 * 2 * 3 - 4
    assert _read(tmp_path / "resumed") == _read(tmp_path / "full")
    a = json.loads((tmp_path / "resumed" / "annotation.json").read_text())
    assert a["agreement"] == saved["agreement"] and a["grades"] == saved["grades"]


def test_prompt_without_text_is_refused(tmp_path, tokenizer):
    make_corpus(tmp_path / "data", n=3)
    with pytest.raises(ValueError, match=r"must contain \{text\}"):
        _run(tmp_path, tmp_path / "o", tokenizer, prompt="Answer:")


def test_cli_config_path_with_a_saved_tiny_model(tmp_path, tokenizer):
    """``annotator=llm backbone.name_or_path=DIR`` through the annotate config (a tiny model saved to disk)."""
    from testkit import compose_cfg

    from sparsecbm.annotate.__main__ import run

    model_dir = tmp_path / "tiny-gpt2"
    tiny_lm("gpt2").save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    make_corpus(tmp_path / "data", n=3)
    cfg = compose_cfg(tmp_path, ["data=csv", f"data.root={tmp_path / 'data'}", "data.text_column=text",
                                 "data.label.column=label", "data.label.values=[bad,good]", "bank=cebab",
                                 "annotator=llm", f"backbone.name_or_path={model_dir}", "llm.max_length=96",
                                 f"out_dir={tmp_path / 'out'}"], "annotate")
    res = run(cfg)
    assert res.provenance["annotator"] == "llm" and res.provenance["model"] == str(model_dir)
    assert res.sizes == {"train": 3, "dev": 3, "test": 3}
    assert len(read_schema(tmp_path / "out").concepts) > 16  # every cebab bank concept, graded copies too
