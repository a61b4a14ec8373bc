"""LightningDataModule for concept-annotated text: load, validate, tokenize once (cached), pad per batch."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler

from sparsecbm.concepts import ConceptSet
from sparsecbm.data.loading import SPLITS, DataError, EncodedSplit, load_splits
from sparsecbm.models.backbone import load_tokenizer

log = logging.getLogger(__name__)


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless a torch.distributed process group is up."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSeededSampler(RandomSampler):
    """Random order that depends only on (seed, epoch), so a resumed run sees the same batches.

    With ``world > 1`` rank ``r`` takes every ``world``-th index of the one global order (padded by
    repeating its start to a multiple of ``world``, so every rank runs as many batches): the ranks'
    batches ``i`` together are the single-process batch ``i`` of ``world`` times the batch size.
    """

    def __init__(self, data_source, seed: int = 0, rank: int = 0, world: int = 1):
        super().__init__(data_source)
        self.seed, self.epoch, self.rank, self.world = seed, 0, rank, world

    def set_epoch(self, epoch: int) -> None:  # called by Lightning at every epoch start
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.data_source) // self.world)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.data_source), generator=g).tolist()
        if self.world > 1:
            order += order[: len(self) * self.world - len(order)]
            order = order[self.rank :: self.world]
        return iter(order)


class ShardSampler(Sampler):
    """Evaluation under data parallelism: rank ``r`` reads examples ``r, r + world, ...`` (no padding,
    so the metrics synced by torchmetrics count every example exactly once)."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


class TokenizedSplit(torch.utils.data.Dataset):
    def __init__(self, encoded: dict[str, list]):
        self.data = encoded

    def __len__(self) -> int:
        return len(self.data["label"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {k: v[i] for k, v in self.data.items()}


class Collator:
    """Pads to the longest sequence in the batch (never to max_length)."""

    def __init__(self, pad_token_id: int, padding_side: str = "right"):
        self.pad_token_id, self.padding_side = pad_token_id, padding_side

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            span = slice(longest - n, longest) if self.padding_side == "left" else slice(0, n)
            ids[row, span] = torch.tensor(it["input_ids"])
            mask[row, span] = 1
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "label": torch.tensor([it["label"] for it in items]),
            "index": torch.tensor([it["index"] for it in items]),
        }
        if items[0]["concepts"]:
            batch["concepts"] = torch.tensor([it["concepts"] for it in items])
        return batch


class CBMDataModule(L.LightningDataModule):
    """Concept-annotated text classification data.

    Args:
        text_column: Column holding the input text.
        label: ``{column, values, skip}``; raw label strings in ``values`` map to 0..n-1.
        concepts: List of ``{name, column[, values, aliases]}``.
        concept_values: Value names shared by all concepts, in index order.
        concept_aliases: Raw strings mapped to a value name (``"no majority": unknown``).
        root: Folder holding the split files; ``None`` tries ``default_root`` then ``hub``.
        files: File name per split (``{train: train.csv, dev: dev.csv, test: test.csv}``).
        hub: ``{name, splits: {train, dev, test}}`` on the Hugging Face hub.
        tokenizer: Tokenizer name or path (defaults to the backbone's).
        max_length: Truncation length in tokens.
        limit: Optional ``{train, dev, test}`` row caps (first N valid rows), for smoke runs.
        cache_dir: Where tokenized splits are cached (keyed by data content, tokenizer and max_length).
        encoding: Text encoding of local files (a UTF-8 byte order mark is always accepted).
        delimiter: CSV field separator (default ``,``; ``\\t`` for ``.tsv``).
        missing_concept: ``error`` (an empty or absent concept cell stops the run) or ``unknown``.
        counterfactuals: Where the data's counterfactual pairs are (``None``: it has none); see
            :class:`~sparsecbm.data.counterfactuals.CounterfactualConfig` and :meth:`counterfactual_pairs`.
    """

    def __init__(
        self,
        text_column: str,
        label: Mapping[str, Any],
        concepts: Sequence[Mapping[str, Any]],
        concept_values: Sequence[str],
        tokenizer: str,
        concept_aliases: Mapping[str, str] | None = None,
        root: str | None = None,
        default_root: str | None = None,
        files: Mapping[str, str] | None = None,
        hub: Mapping[str, Any] | None = None,
        num_concepts: int | None = None,
        max_length: int = 128,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        limit: Mapping[str, int | None] | None = None,
        cache_dir: str | None = None,
        seed: int = 0,
        name: str = "data",
        encoding: str | None = "utf-8",
        delimiter: str | None = None,
        missing_concept: str = "error",
        counterfactuals: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.concept_set = ConceptSet.from_config(concepts, label, concept_values, concept_aliases)
        self.text_column, self.root, self.default_root = text_column, root, default_root
        self.files, self.hub, self.num_concepts = files, hub, num_concepts
        self.tokenizer_name, self.max_length = tokenizer, int(max_length)
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.limit = dict(limit or {})
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.seed, self.name = seed, name
        self.encoding, self.delimiter, self.missing_concept = encoding, delimiter, missing_concept
        self.counterfactuals = counterfactuals
        self._pairs: dict[str, Any] = {}
        self.splits: dict[str, TokenizedSplit] = {}
        self.raw: dict[str, EncodedSplit] = {}
        self.tokenizer = None

    # ------------------------------------------------------------------ loading
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.num_concepts is not None and len(self.concept_set) != self.num_concepts:
            raise DataError(
                f"data config '{self.name}' lists {len(self.concept_set)} concepts {self.concept_set.names} "
                f"but num_concepts is {self.num_concepts}"
            )
        if max(self.max_length, 0) < 8:
            raise DataError(f"data.max_length must be at least 8 tokens, got {self.max_length}")
        self.tokenizer = load_tokenizer(self.tokenizer_name)
        self.raw = load_splits(
            self.concept_set,
            self.text_column,
            root=self.root,
            files=self.files,
            hub=self.hub,
            default_root=self.default_root,
            num_concepts=self.num_concepts,
            encoding=self.encoding,
            delimiter=self.delimiter,
            missing_concept=self.missing_concept,
        )
        for split in SPLITS:
            enc = self.raw[split]
            cap = self.limit.get(split)
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
                raise DataError(f"data.limit.{split}={cap!r} is not valid; expected an integer >= 1 or null (all rows)")
            if cap:
                enc = EncodedSplit(enc.source, enc.texts[:cap], enc.labels[:cap], enc.concepts[:cap], enc.skipped)
                self.raw[split] = enc
            if enc.skipped:
                log.info("data: %s: skipped %d rows with labels %s", enc.source, enc.skipped, list(self.concept_set.label.skip))
            if split == "train":
                self._warn_single_values(enc)
            self.splits[split] = TokenizedSplit(self._tokenize_cached(enc))
            n_cut = self.truncated(split)
            if n_cut:
                log.warning("data: %s: %d of %d texts are longer than data.max_length=%d tokens and were truncated "
                            "to it (results.json: data.truncated); raise data.max_length to read them whole",
                            enc.source, n_cut, len(enc), self.max_length)

    def _warn_single_values(self, enc: EncodedSplit) -> None:
        """A training split whose labels (or a concept's values) are all one class trains a model that can only
        predict that class: a warning (not an error: tiny test and smoke splits are legitimate), naming it."""
        labels = set(enc.labels)
        if len(labels) == 1:
            value = self.concept_set.label.values[next(iter(labels))]
            log.warning("data: %s: every one of the %d training rows has label '%s': the model can only learn to "
                        "predict that class; check data.label.column and the file (or data.limit.train)",
                        enc.source, len(enc), value)
        for i, spec in enumerate(self.concept_set if enc.concepts and enc.concepts[0] else []):
            values = {row[i] for row in enc.concepts}
            if len(values) == 1 and len(enc) > 1:
                log.warning("data: %s: concept '%s' has the single value '%s' in all %d training rows",
                            enc.source, spec.name, spec.values[next(iter(values))], len(enc))

    def truncated(self, split: str) -> int:
        """How many texts of ``split`` were cut to ``max_length`` tokens."""
        return sum(n > self.max_length for n in self.splits[split].data["n_tokens"])

    def _cache_key(self, enc: EncodedSplit) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.tokenizer_name, self.max_length, enc.source, "n_tokens"]).encode())
        h.update(json.dumps([enc.texts, enc.labels, enc.concepts]).encode())
        return h.hexdigest()[:24]

    def _tokenize_cached(self, enc: EncodedSplit) -> dict[str, list]:
        path = self.cache_dir / f"tok-{self._cache_key(enc)}.pt" if self.cache_dir else None
        if path is not None and path.is_file():
            return torch.load(path, weights_only=True)
        ids = self.tokenizer(enc.texts, truncation=True, max_length=self.max_length)["input_ids"]
        out = {
            "input_ids": ids,
            # untruncated lengths (capped one past max_length: enough to count what was cut)
            "n_tokens": [len(x) for x in self.tokenizer(enc.texts, truncation=True,
                                                        max_length=self.max_length + 1)["input_ids"]],
            "label": enc.labels,
            "concepts": enc.concepts,
            "index": list(range(len(enc.texts))),
        }
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # a temporary file of this process's own: parallel runs (sweeps) may tokenize the same split
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
            os.close(fd)
            torch.save(out, tmp)
            os.replace(tmp, path)
        return out

    # -------------------------------------------------------------- dataloaders
    def collator(self) -> Collator:
        return Collator(self.tokenizer.pad_token_id, self.tokenizer.padding_side)

    def loader(self, split: str, shuffle: bool = False, batch_size: int | None = None,
               shard: bool = False) -> DataLoader:
        """A DataLoader over ``split``; ``shard=True`` gives this process its share under DDP/FSDP
        (the trainer's loaders; everything else reads the whole split)."""
        ds = self.splits[split]
        rank, world = process_rank() if shard else (0, 1)
        if shuffle:
            sampler = EpochSeededSampler(ds, self.seed, rank, world)
        else:
            sampler = ShardSampler(len(ds), rank, world) if world > 1 else None
        return DataLoader(
            ds,
            batch_size=batch_size or (self.batch_size if shuffle else self.eval_batch_size),
            sampler=sampler,
            collate_fn=self.collator(),
            num_workers=self.num_workers,
            # the loader's own generator: creating an iterator must not consume the global RNG,
            # or dropout masks would depend on when Lightning builds iterators (fresh vs resumed run)
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True, shard=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("dev", shard=True)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", shard=True)

    def counterfactual_pairs(self, split: str):
        """The :class:`~sparsecbm.data.counterfactuals.CounterfactualPairs` of ``split`` (built once), or
        ``None`` when ``counterfactuals`` is not set or does not list ``split``."""
        from sparsecbm.data.counterfactuals import counterfactual_pairs

        if split not in self._pairs:
            self._pairs[split] = counterfactual_pairs(self, split)
        return self._pairs[split]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sources": {s: self.raw[s].source for s in self.raw},
            "sizes": {s: len(self.raw[s]) for s in self.raw},
            "skipped": {s: self.raw[s].skipped for s in self.raw},
            "max_length": self.max_length,
            # texts longer than max_length tokens, cut to it (a warning is logged too)
            "truncated": {s: self.truncated(s) for s in self.splits},
            "concepts": self.concept_set.names,
        }
