"""Counterfactual pairs: two texts of one review family that differ in exactly one concept.

CEBaB (Abraham et al., NeurIPS 2022) has people rewrite a review so that one aspect changes (food
Positive -> Negative) and nothing else; a pair ``(x, x')`` then measures what that concept does to a
model: ``N(x') - N(x)``. A data set's ``data.counterfactuals`` section says where its pairs are:

- **ids** (the hub copy ``CEBaB/CEBaB``: columns ``original_id``, ``is_original``, ``edit_type``,
  ``edit_goal``): pairs are built as CEBaB's own code does (``get_intervention_pairs`` in
  ``CEBaBing/CEBaB: code/eval_pipeline/utils/data_utils.py``): within one original, (edit, original),
  (original, edit) and (edit, edit) of the same ``edit_type``; a pair whose edited concept has the same
  validated value on both sides is dropped.
- **reconstructed** (a CSV without ids, e.g. ``../shared/data/cebab``): *families* are texts linked by
  sharing their opening (``prefix_chars``) or by word-level similarity (``difflib`` ratio >=
  ``min_similarity`` with >= ``min_shared_words`` words in common), within ``window`` rows of each other
  when the file lists a family's rows together (CEBaB's does); a pair is two texts of a family whose
  values differ in exactly one of the compared concepts (``concepts``; the others equal).

Values are the data's concept values (CEBaB's ``no majority`` and empty cells read as ``unknown``).

Example:
    >>> pairs = counterfactual_pairs(datamodule, "test")          # None when the data has none
    >>> pairs.counts()["food"]["Negative->Positive"]
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sparsecbm.concepts import ConceptSet
from sparsecbm.errors import ConfigError, DataError

#: The hub columns that name the pairs outright (CEBaB's data format).
ID_COLUMNS = {"original": "original_id", "is_original": "is_original", "edit_type": "edit_type",
              "edit_goal": "edit_goal"}


@dataclass
class CounterfactualConfig:
    """``data.counterfactuals``: where a data set's counterfactual pairs are and how to read them.

    Args:
        splits: Splits that hold pairs (CEBaB: dev and test; its train split has one text per review).
        concepts: Names of the concepts a pair may change (``None``: all of the data's concepts); the
            others must be equal on both sides of a reconstructed pair.
        ids: Column names of the explicit ids (:data:`ID_COLUMNS`); used when the split has them.
        prefix_chars: Texts sharing their first ``prefix_chars`` characters are one family.
        min_similarity: ``difflib`` word-sequence ratio above which two texts are one family.
        min_shared_words: Words two texts must have in common (in order) for the similarity link.
        window: Only rows at most ``window`` apart are compared (``None``: all pairs of rows).
    """

    splits: list[str] = field(default_factory=lambda: ["dev", "test"])
    concepts: list[str] | None = None
    ids: dict[str, str] = field(default_factory=lambda: dict(ID_COLUMNS))
    prefix_chars: int = 25
    min_similarity: float = 0.5
    min_shared_words: int = 4
    window: int | None = 12

    @classmethod
    def coerce(cls, cfg: CounterfactualConfig | Mapping[str, Any] | None) -> CounterfactualConfig | None:
        """From itself, a mapping of its keys (a ``DictConfig``) or ``None`` (no pairs configured)."""
        if cfg is None or isinstance(cfg, cls):
            return cfg
        from omegaconf import OmegaConf

        items = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
        known = set(cls.__dataclass_fields__)
        if unknown := sorted(set(items) - known):
            raise ConfigError(f"unknown data.counterfactuals option(s) {unknown}; expected some of {sorted(known)}")
        items = {k: v for k, v in items.items() if v is not None or k in ("concepts", "window")}
        out = cls(**items)
        out.ids = {**ID_COLUMNS, **dict(out.ids)}
        if not 0.0 <= out.min_similarity <= 1.0:
            raise ConfigError(f"data.counterfactuals.min_similarity={out.min_similarity} must be in [0, 1]")
        for key, low in (("prefix_chars", 0), ("min_shared_words", 0), ("window", 1)):
            value = getattr(out, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ConfigError(f"data.counterfactuals.{key}={value} must be an integer >= {low}"
                                  + (" (or null: compare all rows)" if key == "window" else ""))
        return out


@dataclass(frozen=True)
class CounterfactualPair:
    """``counterfactual`` is ``base`` with ``concept`` changed from ``before`` to ``after``.

    ``base`` / ``counterfactual`` are 0-based data rows of the split file; ``family`` the original's id
    (ids) or the family's number (reconstructed); ``goal`` the editor's target value (ids only);
    ``base_values`` every compared concept's value on the base side (what an explainer may read, as CEBaB's
    pipeline lets explainers read the base's aspect labels).
    """

    base: int
    counterfactual: int
    concept: str
    before: str
    after: str
    base_text: str
    counterfactual_text: str
    family: str
    goal: str | None = None
    base_values: dict[str, str] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        return f"{self.before}->{self.after}"


@dataclass
class CounterfactualPairs:
    """The pairs of one split, how they were found, and counts per concept and direction."""

    split: str
    source: str  # "ids" | "reconstructed"
    pairs: list[CounterfactualPair]
    n_rows: int = 0
    n_families: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self):
        return iter(self.pairs)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{concept: {"before->after": n}}``, sorted."""
        c = Counter((p.concept, p.direction) for p in self.pairs)
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for (concept, direction), n in sorted(c.items()):
            out[concept][direction] = n
        return dict(out)

    def texts(self) -> tuple[list[str], list[int], list[int]]:
        """(unique texts, index of each pair's base in them, index of each pair's counterfactual)."""
        index: dict[int, int] = {}
        texts: list[str] = []
        for p in self.pairs:
            for row, text in ((p.base, p.base_text), (p.counterfactual, p.counterfactual_text)):
                if row not in index:
                    index[row] = len(texts)
                    texts.append(text)
        return texts, [index[p.base] for p in self.pairs], [index[p.counterfactual] for p in self.pairs]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "counterfactual_pairs", "split": self.split, "source": self.source, "n_rows": self.n_rows,
                "n_families": self.n_families, "n_pairs": len(self.pairs), "counts": self.counts(),
                "settings": self.settings, "pairs": [asdict(p) for p in self.pairs]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CounterfactualPairs:
        return cls(split=d["split"], source=d["source"], pairs=[CounterfactualPair(**p) for p in d["pairs"]],
                   n_rows=int(d.get("n_rows", 0)), n_families=int(d.get("n_families", 0)),
                   settings=dict(d.get("settings", {})))

    def save(self, path: str | Path) -> Path:
        from sparsecbm.jsonio import write_json

        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> CounterfactualPairs:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def summary(self) -> dict[str, Any]:
        """Counts without the pairs (for reports)."""
        return {k: v for k, v in self.to_dict().items() if k != "pairs"}


# --------------------------------------------------------------------------- building
def _values(rows: Sequence[Mapping[str, Any]], concepts: ConceptSet, names: list[str],
            missing: str) -> list[tuple[str, ...] | None]:
    """Each row's value names for ``names`` (``None`` for a row with a value the data cannot read)."""
    out = []
    for row in rows:
        vals = []
        for name in names:
            spec = concepts[name]
            raw = "" if row.get(spec.column) is None else str(row.get(spec.column)).strip()
            try:
                vals.append(spec.values[spec.index(raw)])
            except KeyError:
                if raw == "" and missing == "unknown" and "unknown" in spec.values:
                    vals.append("unknown")
                else:
                    vals = None
                    break
        out.append(None if vals is None else tuple(vals))
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def text_similarity(a: Sequence[str], b: Sequence[str]) -> tuple[float, int]:
    """(``difflib`` ratio of two word sequences, words matched in order)."""
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    matched = sum(block.size for block in sm.get_matching_blocks())
    return (2.0 * matched / (len(a) + len(b)) if a or b else 1.0), matched


def families(texts: Sequence[str], cfg: CounterfactualConfig) -> list[int]:
    """Family number of every text: connected components of the links described in the module docstring."""
    n = len(texts)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    words = [_words(t) for t in texts]
    sets = [set(w) for w in words]
    prefix = [t[: cfg.prefix_chars] if cfg.prefix_chars and len(t) >= cfg.prefix_chars else None for t in texts]
    for i in range(n):
        stop = n if cfg.window is None else min(n, i + cfg.window + 1)
        for j in range(i + 1, stop):
            linked = prefix[i] is not None and prefix[i] == prefix[j]
            if not linked and not sets[i].isdisjoint(sets[j]):  # difflib only for texts sharing a word
                ratio, matched = text_similarity(words[i], words[j])
                linked = ratio >= cfg.min_similarity and matched >= cfg.min_shared_words
            if linked:
                parent[find(i)] = find(j)
    roots: dict[int, int] = {}
    return [roots.setdefault(find(i), len(roots)) for i in range(n)]


def family_roles(texts: Sequence[str], values: Sequence[tuple[str, ...]], rows: list[int]) -> tuple[int | None, dict[int, set[int]]]:
    """The family's original (or ``None``) and, per member, the concepts its edit changed.

    Every edit changes one concept of the original, so each concept's most common value in the family is the
    original's (ties: the value of the member most similar to the others). Members holding all of these values
    are the original and edits that changed no value (failed, or rewording another aspect): the one most
    similar to the other members (by :func:`text_similarity`) is taken as the original and the others are left
    out, so that two edits aimed at different concepts are never paired through a failed edit.
    """
    words = {i: _words(texts[i]) for i in rows}
    central = {i: sum(text_similarity(words[i], words[j])[0] for j in rows if j != i) for i in rows}
    ranked = sorted(rows, key=lambda i: (-central[i], i))
    consensus = []
    for k in range(len(values[rows[0]])):
        counts = Counter(values[i][k] for i in rows)
        best = max(counts.values())
        consensus.append(next(values[i][k] for i in ranked if counts[values[i][k]] == best))
    changed = {i: {k for k, v in enumerate(values[i]) if v != consensus[k]} for i in rows}
    original = next((i for i in ranked if not changed[i]), None)
    return original, changed


def reconstruct_pairs(texts: Sequence[str], values: Sequence[tuple[str, ...] | None], names: list[str],
                      cfg: CounterfactualConfig, split: str = "") -> CounterfactualPairs:
    """Pairs of texts of one family (:func:`families`) that differ in exactly one concept ``C``: the original
    and an edit of ``C``, or two edits of ``C`` (:func:`family_roles`), whose words differ.

    Args:
        texts: The split's texts, in file order.
        values: Per text the value names of ``names`` (``None``: the row is left out).
        names: The compared concepts.
    """
    fam = families(texts, cfg)
    members: dict[int, list[int]] = defaultdict(list)
    for i, f in enumerate(fam):
        if values[i] is not None:
            members[f].append(i)
    pairs = []
    for f, rows in members.items():
        if len(rows) < 2:
            continue
        original, changed = family_roles(texts, values, rows)
        usable = [i for i in rows if changed[i] or i == original]
        for a in usable:
            for b in usable:
                diff = [k for k, (u, v) in enumerate(zip(values[a], values[b])) if u != v]
                if a == b or len(diff) != 1 or not changed[a] | changed[b] <= set(diff) \
                        or _words(texts[a]) == _words(texts[b]):
                    continue
                k = diff[0]
                pairs.append(CounterfactualPair(a, b, names[k], values[a][k], values[b][k], texts[a], texts[b], str(f),
                                                base_values=dict(zip(names, values[a]))))
    settings = {k: getattr(cfg, k) for k in ("prefix_chars", "min_similarity", "min_shared_words", "window")}
    return CounterfactualPairs(split=split, source="reconstructed", pairs=pairs, n_rows=len(texts),
                               n_families=sum(1 for rows in members.values() if len(rows) > 1),
                               settings={**settings, "concepts": names})


def _concept_of(edit_type: str, concepts: ConceptSet, names: list[str]) -> str | None:
    """The concept an ``edit_type`` value (``food``) names: by name, else by column (``food_aspect_majority``)."""
    for name in names:
        if name == edit_type or concepts[name].column.startswith(f"{edit_type}_"):
            return name
    return None


def pairs_from_ids(rows: Sequence[Mapping[str, Any]], texts: Sequence[str], values: Sequence[tuple[str, ...] | None],
                   names: list[str], concepts: ConceptSet, cfg: CounterfactualConfig,
                   split: str = "") -> CounterfactualPairs:
    """CEBaB's pairs from the explicit ids (see the module docstring)."""
    cols = cfg.ids
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[str(row[cols["original"]])].append(i)

    def is_original(i: int) -> bool:
        v = rows[i].get(cols["is_original"])
        return v is True or str(v).strip().lower() in ("true", "1")

    pairs = []
    for orig, members in groups.items():
        originals = [i for i in members if is_original(i)]
        edits = [i for i in members if not is_original(i)]
        candidates = [(e, o) for e in edits for o in originals] + [(o, e) for e in edits for o in originals]
        candidates += [(a, b) for a in edits for b in edits
                       if a != b and rows[a].get(cols["edit_type"]) == rows[b].get(cols["edit_type"])]
        for a, b in candidates:
            edit = b if b in edits else a
            concept = _concept_of(str(rows[edit].get(cols["edit_type"]) or ""), concepts, names)
            if concept is None or values[a] is None or values[b] is None:
                continue
            k = names.index(concept)
            if values[a][k] == values[b][k]:  # the edit did not change the validated value
                continue
            goal = rows[b].get(cols["edit_goal"]) if b in edits else None
            pairs.append(CounterfactualPair(a, b, concept, values[a][k], values[b][k], texts[a], texts[b], orig,
                                            None if goal is None else str(goal), dict(zip(names, values[a]))))
    return CounterfactualPairs(split=split, source="ids", pairs=pairs, n_rows=len(rows),
                               n_families=sum(1 for m in groups.values() if len(m) > 1),
                               settings={"ids": dict(cols), "concepts": names})


def build_pairs(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], concepts: ConceptSet, text_column: str,
                cfg: CounterfactualConfig, split: str = "", missing_concept: str = "unknown") -> CounterfactualPairs:
    """The pairs of one split's rows: from the ids when the columns are there, else reconstructed."""
    names = list(cfg.concepts) if cfg.concepts else concepts.names
    if bad := [n for n in names if n not in concepts.names]:
        raise ConfigError(f"data.counterfactuals.concepts: {bad} are not concepts of this data; "
                          f"expected some of {concepts.names}")
    if text_column not in columns:
        raise DataError(f"split '{split}' has no text column '{text_column}'; its columns are {list(columns)}")
    texts = ["" if r.get(text_column) is None else str(r.get(text_column)).strip() for r in rows]
    values = _values(rows, concepts, names, missing_concept)
    if all(c in columns for c in (cfg.ids["original"], cfg.ids["is_original"], cfg.ids["edit_type"])):
        return pairs_from_ids(rows, texts, values, names, concepts, cfg, split)
    return reconstruct_pairs(texts, values, names, cfg, split)


def split_rows(datamodule, split: str) -> tuple[list[str], list[dict[str, Any]], str]:
    """(columns, rows, source) of ``split`` as the data module reads it (its folder or the hub), all columns."""
    from sparsecbm.data.files import read_table
    from sparsecbm.data.hub import _read_hub

    dm = datamodule
    files = dict(dm.files or {s: f"{s}.csv" for s in ("train", "dev", "test")})
    root = dm.root
    if root is None and dm.default_root is not None and Path(dm.default_root).is_dir():
        root = dm.default_root
    if root is not None:
        path = Path(root).expanduser() / files[split]
        table = read_table(path, dm.encoding, dm.delimiter)
        return table.columns, table.rows, str(path)
    if not dm.hub or not dm.hub.get("name"):
        raise DataError("data.counterfactuals: the data has no folder (data.root) and no hub data set to read pairs from")
    columns, rows = _read_hub(dm.hub["name"], dm.hub["splits"][split])
    return columns, rows, f"hub:{dm.hub['name']}[{dm.hub['splits'][split]}]"


def counterfactual_pairs(datamodule, split: str, cfg: CounterfactualConfig | Mapping[str, Any] | None = None
                         ) -> CounterfactualPairs | None:
    """The pairs of ``split`` of a :class:`~sparsecbm.data.CBMDataModule` (``None`` when its data config
    has no ``counterfactuals`` section, or ``split`` is not one of its ``splits``).

    Args:
        datamodule: The data module (its ``counterfactuals`` section unless ``cfg`` is given).
        split: ``train``, ``dev`` or ``test``.
        cfg: Overrides the data module's section.
    """
    cfg = CounterfactualConfig.coerce(cfg if cfg is not None else getattr(datamodule, "counterfactuals", None))
    if cfg is None or split not in cfg.splits:
        return None
    columns, rows, source = split_rows(datamodule, split)
    pairs = build_pairs(columns, rows, datamodule.concept_set, datamodule.text_column, cfg, split,
                        datamodule.missing_concept)
    pairs.settings["source_file"] = source
    return pairs
