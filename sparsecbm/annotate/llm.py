"""LLM concept annotation: a local Hugging Face causal LM answers one constrained question per concept and
text, restricted to the concept's value set (``annotator=llm backbone.name_or_path=...``).

For text *t*, concept *c* (description *d*) and its values *v_1..v_V* plus ``unknown``, the prompt
``prompt.format(text=t, concept=c, description=d, values="v_1, ..., unknown")`` is followed by each
value's continuation ``" v"``; the value's score is the **sum of the log-probabilities of its tokens**
(``length_norm=True``: their mean). The answer is the highest-scoring value: the model cannot answer
outside the set. Graded copies (``levels`` in the bank) come from score quantiles of
``score(second value) - score(first value)``, as in the embedding annotator.

Scores are computed in batches of prompts (every value of a prompt in the same forward pass) and
appended, batch by batch, to ``out_dir/.llm_progress/<fingerprint>/<split>.jsonl``: a run that stops
(killed, out of memory) picks up where it stopped when started again with the same model, prompt and
bank. The output folder has the embedding annotator's format (split files, ``concepts.yaml``,
``annotation.json`` with agreement against human labels).

Tested on a tiny randomly initialised model, for the code path only (tests/annotate/test_llm.py): the
shipped prompt has not been measured with a real LLM.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparsecbm.annotate.annotator import AnnotationResult, check_human_values, read_checked, write_annotation
from sparsecbm.annotate.bank import BankConcept, ConceptBank
from sparsecbm.concepts import ConceptSpec
from sparsecbm.data.loading import SPLITS, _cell
from sparsecbm.errors import ConfigError

log = logging.getLogger(__name__)

PROMPT = ("Text: {text}\nQuestion: What does the text say about {description}? "
          "Answer with one of: {values}.\nAnswer:")
PROGRESS_DIR = ".llm_progress"


class LLMScorer:
    """Sum (or mean) of the log-probabilities of each answer's tokens after a prompt.

    Args:
        model: A Hugging Face causal LM name or path (``AutoModelForCausalLM``), or a loaded model.
        tokenizer: Its tokenizer (default: loaded from ``model``'s name).
        batch_size: Prompts per forward pass (each with all its answers: ``batch_size * V`` sequences).
        max_length: Tokens per sequence; the text is cut so prompt and longest answer fit.
        device: ``cpu``, ``cuda``...
        dtype: ``bfloat16`` / ``float16`` / ``None`` (float32).
        length_norm: Mean instead of sum of the answer's token log-probabilities.
    """

    def __init__(self, model: Any, tokenizer: Any = None, batch_size: int = 8, max_length: int = 384,
                 device: str = "cpu", dtype: str | None = None, length_norm: bool = False):
        from sparsecbm.models.backbone import _dtype, load_tokenizer, resolve_name

        if isinstance(model, str):
            from transformers import AutoModelForCausalLM

            self.name = model
            tokenizer = tokenizer or load_tokenizer(model)
            model = AutoModelForCausalLM.from_pretrained(resolve_name(model), dtype=_dtype(dtype))
        else:
            self.name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
            if tokenizer is None:
                raise ValueError("LLMScorer: pass the tokenizer together with a loaded model")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.batch_size, self.max_length, self.device = int(batch_size), int(max_length), device
        self.length_norm = bool(length_norm)
        self.forward_calls = 0

    def encode_answers(self, answers: Sequence[str]) -> list[list[int]]:
        ids = [self.tokenizer(" " + a, add_special_tokens=False)["input_ids"] for a in answers]
        empty = [a for a, i in zip(answers, ids) if not i]
        if empty:
            raise ConfigError(f"answer(s) {empty} have no tokens for this tokenizer")
        return ids

    def encode_prompt(self, template: str, text: str, budget: int, **fields: str) -> list[int]:
        """Prompt token ids with ``text`` cut (from its end) so the whole prompt has at most ``budget`` tokens."""
        tok = self.tokenizer
        frame = len(tok(template.format(text="", **fields))["input_ids"])
        text_ids = tok(text, add_special_tokens=False)["input_ids"]
        room = max(budget - frame, 1)
        if len(text_ids) > room:
            text = tok.decode(text_ids[:room], skip_special_tokens=True)
        ids = tok(template.format(text=text, **fields))["input_ids"]
        return ids[-budget:] if len(ids) > budget else ids

    @torch.no_grad()
    def score(self, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]]) -> np.ndarray:
        """``[N, V]`` log-probability of each answer's tokens after each prompt (one forward per batch)."""
        out = []
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for i in range(0, len(prompts), self.batch_size):
            chunk = prompts[i: i + self.batch_size]
            seqs = [list(p) + list(a) for p in chunk for a in answers]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for j, s in enumerate(seqs):  # right padding: positions of the real tokens are unchanged
                ids[j, : len(s)], mask[j, : len(s)] = torch.tensor(s), 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            self.forward_calls += 1
            logp = torch.log_softmax(logits.float(), -1).cpu()
            scores = torch.zeros(len(seqs))
            for j, s in enumerate(seqs):
                a = answers[j % len(answers)]
                start = len(s) - len(a)  # answer tokens s[start:], each predicted from the position before
                pos = torch.arange(start - 1, len(s) - 1)
                tok_lp = logp[j, pos, torch.tensor(a)]
                scores[j] = tok_lp.mean() if self.length_norm else tok_lp.sum()
            out.append(scores.view(len(chunk), len(answers)).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(answers)), dtype=np.float32)


def _fingerprint(scorer: LLMScorer, bank: ConceptBank, prompt: str) -> str:
    key = json.dumps([scorer.name, scorer.max_length, scorer.length_norm, prompt, bank.digest()])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _read_progress(path: Path) -> dict[tuple[str, int], list[float]]:
    """Scores already written; a line cut short by a crash is ignored (recomputed)."""
    done: dict[tuple[str, int], list[float]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
                done[(r["concept"], int(r["row"]))] = [float(x) for x in r["scores"]]
            except (ValueError, KeyError, TypeError):
                continue
    return done


def score_split(scorer: LLMScorer, texts: Sequence[str], bank: ConceptBank, prompt: str, progress: Path,
                on_batch: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """``{concept: [N, V+1]}`` answer scores (values, then ``unknown``), resuming from ``progress``."""
    done = _read_progress(progress)
    progress.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, np.ndarray] = {}
    with open(progress, "a", encoding="utf-8") as f:
        for c in bank.concepts:
            names = list(c.values) + [bank.unknown]
            answers = scorer.encode_answers(names)
            budget = scorer.max_length - max(len(a) for a in answers)
            todo = [i for i in range(len(texts)) if (c.name, i) not in done]
            for b in range(0, len(todo), scorer.batch_size):
                rows = todo[b: b + scorer.batch_size]
                prompts = [scorer.encode_prompt(prompt, texts[i], budget, concept=c.name,
                                                description=c.description, values=", ".join(names)) for i in rows]
                scores = scorer.score(prompts, answers)
                for i, sc in zip(rows, scores):
                    done[(c.name, i)] = [float(x) for x in sc]
                    f.write(json.dumps({"concept": c.name, "row": i, "scores": done[(c.name, i)]}) + "\n")
                f.flush()
                if on_batch is not None:
                    on_batch(len(rows))
            out[c.name] = np.asarray([done[(c.name, i)] for i in range(len(texts))], dtype=np.float64)
    return out


def annotate_folder_llm(
    root: str | Path,
    bank: ConceptBank,
    out_dir: str | Path,
    text_column: str,
    label: Mapping[str, Any],
    human: Sequence[ConceptSpec] = (),
    files: Mapping[str, str] | None = None,
    scorer: LLMScorer | None = None,
    prompt: str = PROMPT,
    progress_bar: bool = True,
    **scorer_args: Any,
) -> AnnotationResult:
    """Annotate ``root`` with ``bank`` by asking a causal LM (see the module docstring); resumable.

    Args:
        root, bank, out_dir, text_column, label, human, files: As :func:`~sparsecbm.annotate.annotate_folder`.
        scorer: An :class:`LLMScorer`; without it one is built from ``scorer_args`` (``model=...``).
        prompt: Template with ``{text}``, ``{description}``, ``{concept}`` and ``{values}``.
        progress_bar: Show a rich progress bar.
    """
    start = time.perf_counter()
    for key in ("{text}",):
        if key not in prompt:
            raise ConfigError(f"llm.prompt must contain {key}; got {prompt!r}")
    root, out = Path(root).expanduser(), Path(out_dir).expanduser()
    scorer = scorer or LLMScorer(**scorer_args)
    data = read_checked(root, files, text_column, label)
    human = [h for h in human if all(h.column in data[s][0] for s in SPLITS)]
    check_human_values(bank, {h.column: h for h in human})
    fingerprint = _fingerprint(scorer, bank, prompt)
    texts = {s: [_cell(r[text_column]) for r in rows] for s, (_, rows) in data.items()}
    scores: dict[str, dict[str, np.ndarray]] = {}
    from rich.progress import Progress

    from sparsecbm.logs import ProgressLines

    total = sum(len(t) for t in texts.values()) * len(bank)
    lines = ProgressLines(f"asking {scorer.name} (text x concept)", total)  # the log's view of the bar

    def advance(n: int) -> None:
        bar.advance(task, n)
        lines.advance(n)

    with Progress(disable=not progress_bar, transient=True) as bar:
        task = bar.add_task(f"asking {scorer.name}", total=total)
        for s in SPLITS:
            scores[s] = score_split(scorer, texts[s], bank, prompt, out / PROGRESS_DIR / fingerprint / f"{s}.jsonl",
                                    on_batch=advance)
    values = {c.name: {s: scores[s][c.name].argmax(1) for s in SPLITS} for c in bank.concepts}
    polarity = {c.name: {s: _polarity(c, scores[s][c.name]) for s in SPLITS} for c in bank.concepts if c.levels}
    provenance = {"annotator": "llm", "model": scorer.name, "prompt": prompt, "length_norm": scorer.length_norm,
                  "max_length": scorer.max_length, "progress": str(out / PROGRESS_DIR / fingerprint)}
    decisions = {c.name: {"kind": "llm", "answers": list(c.values) + [bank.unknown]} for c in bank.concepts}
    return write_annotation(root, out, bank, data, text_column, label, human, values, polarity, provenance,
                            decisions, start)


def _polarity(concept: BankConcept, scores: np.ndarray) -> np.ndarray:
    """The graded score: second value's answer score minus the first's (positive minus negative)."""
    return scores[:, 1] - scores[:, 0]
