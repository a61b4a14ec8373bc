"""The gradual pruning schedule: a frozen description of when the masks reach which sparsity."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from sparsecbm.errors import ConfigError

UNITS = ("fraction", "epoch", "step")
KINDS = ("cubic", "linear")
SCOPES = ("layer", "global")


def scheduled_sparsity(progress: float, init: float, final: float, kind: str = "cubic") -> float:
    """Sparsity at ``progress`` ∈ [0, 1] of the pruning window (cubic: Zhu & Gupta 2017)."""
    t = min(max(progress, 0.0), 1.0)
    if kind == "linear":
        return init + (final - init) * t
    if kind == "cubic":
        return final + (init - final) * (1.0 - t) ** 3
    raise ConfigError(f"sparsity.schedule.kind='{kind}' is not valid; expected linear or cubic")


def schedule_steps(schedule: Mapping[str, Any], total_steps: int, steps_per_epoch: int) -> tuple[int, int]:
    """The pruning window in optimizer steps; ``unit`` is ``step``, ``epoch`` or ``fraction`` (of training)."""
    unit = schedule.get("unit", "fraction")
    scale = {"step": 1, "epoch": steps_per_epoch, "fraction": total_steps}.get(unit)
    if scale is None:
        raise ConfigError(f"sparsity.schedule.unit='{unit}' is not valid; expected step, epoch or fraction")
    start, end = round(float(schedule["start"]) * scale), round(float(schedule["end"]) * scale)
    if end < start:
        raise ConfigError(f"sparsity.schedule: end ({schedule['end']}) is before start ({schedule['start']})")
    return start, end


@dataclass(frozen=True)
class Schedule:
    """``init_sparsity`` → ``final_sparsity`` between ``start`` and ``end`` (in ``unit``s), updated every
    ``every`` steps; ``scope`` ranks scores per layer or over all masked layers at once.

    Training runs steps ``0 .. total - 1``, so an ``end`` at or past the last step (``end=1.0`` of
    training) is the last step: the final sparsity is always reached at the end of the window.
    """

    init_sparsity: float = 0.0
    final_sparsity: float = 0.7
    start: float = 0.0
    end: float = 0.6
    unit: str = "fraction"
    kind: str = "cubic"
    every: int = 20
    scope: str = "layer"

    def __post_init__(self) -> None:
        from sparsecbm.options import SCHEDULE, check_object

        check_object(self, SCHEDULE)  # declared once in sparsecbm.options (a ConfigError, a ValueError subclass)
        if float(self.end) < float(self.start):
            raise ConfigError(f"sparsity.schedule: end ({self.end}) is before start ({self.start})")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | Schedule | None) -> Schedule:
        """From a config mapping (unknown keys are an error naming the valid ones)."""
        if isinstance(settings, Schedule):
            return settings
        settings = dict(settings or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"sparsity.schedule: unknown setting(s) {unknown}; expected some of {sorted(known)}")
        types = {f.name: f.type for f in fields(cls)}
        cast = {"float": float, "int": int, "str": str}

        def convert(k: str, v: Any) -> Any:
            try:
                return cast[types[k]](v)
            except (TypeError, ValueError):
                return v  # check_object names the option and what it expects

        return cls(**{k: convert(k, v) for k, v in settings.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def window(self, total_steps: int, steps_per_epoch: int) -> tuple[int, int]:
        """(first, last) optimizer step of the window, clamped to the steps training runs (0 .. total - 1)."""
        start, end = schedule_steps(self.to_dict(), total_steps, steps_per_epoch)
        if end > total_steps:
            raise ConfigError(f"sparsity.schedule: the window ends at step {end} ({self.end} {self.unit}), after the "
                             f"{total_steps} steps training runs, so the final sparsity {self.final_sparsity} would "
                             "never be reached; lower sparsity.schedule.end or train longer")
        last = max(int(total_steps) - 1, 0)
        return min(start, last), min(end, last)

    def target(self, step: int, window: tuple[int, int]) -> float | None:
        """The sparsity to set at ``step``, or None if the masks are not updated there."""
        start, end = window
        every = max(int(self.every), 1)
        if step < start or step > end or ((step - start) % every and step != end):
            return None
        progress = 1.0 if end == start else (step - start) / (end - start)
        return scheduled_sparsity(progress, self.init_sparsity, self.final_sparsity, self.kind)
