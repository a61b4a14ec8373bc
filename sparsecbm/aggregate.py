"""Summaries of a Hydra multirun folder: ``python -m sparsecbm.aggregate multirun_dir=DIR [metric=M] [out=F]``.

Every job folder of a multirun (grid or Optuna) holds ``.hydra/overrides.yaml`` (its command-line
overrides) and, when it finished, ``results.json``. This module turns them into

- ``trials.csv``: one row per job — its swept parameters, the optimised metric, the main val/test
  metrics, and ``ok`` or ``failed``;
- ``summary.md``: the best job, then a table of mean ± std over seeds, grouped by every swept
  parameter except ``seed`` (metrics in %).

:class:`SweepSummary` (a Hydra callback, enabled in ``conf/hydra/default.yaml``) writes both into
the multirun folder when a multirun ends; the Optuna sweeper adds ``optimization_results.yaml``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from sparsecbm.errors import DataError, entry_point
from sparsecbm.outputs import atomic_write, write_text
from sparsecbm.results import fmt_mean_std, write_markdown
from sparsecbm.run_result import RunResult

METRICS = ("val/label/f1", "val/label/acc", "test/label/acc", "test/label/f1", "test/concept/acc", "test/concept/f1")


@dataclass
class Trial:
    """One job of a multirun."""

    job: str
    params: dict[str, str]
    path: Path
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.metrics)


def _overrides(job_dir: Path) -> dict[str, str]:
    import yaml

    out = {}
    for item in yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def load_trials(multirun_dir: str | Path, metrics: Sequence[str] = METRICS) -> list[Trial]:
    """Every job folder below ``multirun_dir`` (sorted by job number), with the metrics it reached."""
    root = Path(multirun_dir)
    trials = []
    for overrides in sorted(root.rglob(".hydra/overrides.yaml")):
        job_dir = overrides.parent.parent
        trial = Trial(str(job_dir.relative_to(root)), _overrides(job_dir), job_dir)
        result = job_dir / "results.json"
        if result.is_file():
            run = RunResult.load(result)
            for m in metrics:
                try:
                    trial.metrics[m] = run.metric(m)
                except KeyError:
                    pass
        trials.append(trial)
    return sorted(trials, key=lambda t: (len(t.job), t.job))


def swept_keys(trials: Sequence[Trial]) -> list[str]:
    """Override keys whose value differs between jobs (what the sweep varied), in first-seen order."""
    keys: list[str] = []
    for t in trials:
        keys += [k for k in t.params if k not in keys]
    return [k for k in keys if len({t.params.get(k) for t in trials}) > 1]


def best_trial(trials: Sequence[Trial], metric: str) -> Trial | None:
    """The finished job with the highest ``metric`` (the lowest for a loss)."""
    done = [t for t in trials if metric in t.metrics]
    if not done:
        return None
    sign = -1.0 if metric.endswith("loss") else 1.0
    return max(done, key=lambda t: sign * t.metrics[metric])


def write_trials_csv(trials: Sequence[Trial], metrics: Sequence[str], path: str | Path) -> Path:
    keys = swept_keys(trials)
    with atomic_write(path) as f:
        w = csv.writer(f)
        w.writerow(["job", *keys, *metrics, "status", "dir"])
        for t in trials:
            w.writerow([t.job, *(t.params.get(k, "") for k in keys), *(t.metrics.get(m, "") for m in metrics),
                        "ok" if t.ok else "failed", str(t.path)])
    return Path(path)


def aggregate_table(trials: Sequence[Trial], metrics: Sequence[str] = METRICS, by_seed: str = "seed") -> str:
    """Markdown: one row per setting of the swept parameters other than ``seed``, mean ± std (in %)."""
    keys = [k for k in swept_keys(trials) if k != by_seed]
    groups: dict[tuple, list[Trial]] = {}
    for t in trials:
        if t.ok:
            groups.setdefault(tuple(t.params.get(k, "") for k in keys), []).append(t)
    head = [*(keys or ["setting"]), "runs", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for setting, ts in groups.items():
        cells = list(setting) if keys else ["all"]
        cells.append(str(len(ts)))
        cells += [fmt_mean_std([t.metrics[m] for t in ts if m in t.metrics]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [t.job for t in trials if not t.ok]
    if failed:
        lines += ["", f"Failed or unfinished jobs (no results.json): {', '.join(failed)}"]
    return "\n".join(lines) + "\n"


def summarize(multirun_dir: str | Path, metric: str = "val/label/f1", metrics: Sequence[str] = METRICS) -> str:
    """Write ``trials.csv`` and ``summary.md`` into ``multirun_dir``; return the markdown."""
    root = Path(multirun_dir)
    metrics = [metric, *(m for m in metrics if m != metric)]
    trials = load_trials(root, metrics)
    if not trials:
        raise DataError(f"no Hydra job folders (.hydra/overrides.yaml) under {root}; expected a multirun folder "
                        "(outputs/train/multiruns/<date_time>)")
    write_trials_csv(trials, metrics, root / "trials.csv")
    best = best_trial(trials, metric)
    md = [f"# Sweep {root}", "", f"{len(trials)} jobs, {sum(t.ok for t in trials)} finished; metric `{metric}`.", ""]
    if best is not None:
        params = ", ".join(f"{k}={best.params[k]}" for k in swept_keys(trials) if k in best.params)
        md += [f"Best: job {best.job} ({params}): {metric} = {best.metrics[metric]:.4f}", ""]
    md += ["Mean ± std over seeds (%), grouped by the swept parameters:", "", aggregate_table(trials, metrics)]
    text = "\n".join(md)
    write_text(root / "summary.md", text)
    return text


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, summarise its folder (``trials.csv``, ``summary.md``)."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        root = Path(config.hydra.sweep.dir)
        if root.is_dir() and any(root.rglob(".hydra/overrides.yaml")):
            summarize(root, config.get("optimized_metric") or "val/label/f1")


USAGE = """usage: python -m sparsecbm.aggregate multirun_dir=DIR [metric=val/label/f1] [out=FILE.md]
  (or bash run.sh aggregate ...)  Writes trials.csv and summary.md into the multirun folder and prints the summary.
  multirun_dir  a Hydra multirun folder (outputs/train/multiruns/<date_time>)
  metric        the metric that ranks jobs (first column)
  out           also copy summary.md to this file (not a folder)
"""


@entry_point
def main() -> None:
    import sys

    from sparsecbm.keyvalue import compose_options, legacy_argv

    argv = legacy_argv(sys.argv[1:], "multirun_dir", {"--metric": "metric", "--out": "out"}, many=False)
    cfg = compose_options("aggregate", argv, USAGE)
    if not Path(str(cfg.multirun_dir)).is_dir():
        raise DataError(f"{cfg.multirun_dir}: not a folder; expected a multirun folder "
                        "(outputs/train/multiruns/<date_time>)")
    md = summarize(str(cfg.multirun_dir), str(cfg.metric))
    write_markdown(md, cfg.out)
    print(md)


if __name__ == "__main__":
    main()
