"""sparsecbm: sparse concept-bottleneck language models that explain themselves.

The public names are imported on first use (PEP 562), so a command that stops at a user error (a bad
option, data that cannot be found) answers before torch and Lightning are loaded.

Example:
    >>> import sparsecbm
    >>> from sparsecbm.interpret import intervene
    >>> session = sparsecbm.load("outputs/train/runs/<run>/checkpoints/best.ckpt")
    >>> intervene(session, "The pasta was cold.", {"food": "Positive"}).changed()

``sparsecbm.intervene``, ``sparsecbm.explain``, ``sparsecbm.evaluate``, ... are the commands' modules
(``python -m sparsecbm.intervene``); the library functions live in :mod:`sparsecbm.interpret`.
"""

import importlib.util as _util
import sys as _sys

from sparsecbm.lazy import lazy_exports

#: A python without sparsecbm's dependencies (e.g. the system python3 in a clone where ``bash run.sh``
#: installed them into .venv): say how to reach them instead of a ``ModuleNotFoundError`` traceback.
_MISSING = [m for m in ("omegaconf", "hydra", "torch", "lightning") if _util.find_spec(m) is None]
if _MISSING:
    _HINT = (f"sparsecbm's dependencies {_MISSING} are not installed for this python ({_sys.executable}). Run "
             "commands through the wrapper, which finds the project's .venv: `bash run.sh <command> ...` "
             "(e.g. bash run.sh evaluate ckpt_path=...), or activate it once: `source .venv/bin/activate`; "
             "the first `bash run.sh` creates .venv and installs them")
    if _sys.argv[:1] == ["-m"]:  # `python -m sparsecbm.<command>`: a message, not a traceback
        _sys.stderr.write(f"error: {_HINT}\n")
        raise SystemExit(2)
    raise ModuleNotFoundError(_HINT, name=_MISSING[0])

__version__ = "0.1.0"
_EXPORTS = {
    "ConceptSet": "sparsecbm.concepts", "ConceptSpec": "sparsecbm.concepts", "LabelSpec": "sparsecbm.concepts",
    "CheckpointMeta": "sparsecbm.checkpoint", "load_model": "sparsecbm.checkpoint",
    "InferenceSession": "sparsecbm.session", "load": "sparsecbm.session",
    "InterventionCurve": "sparsecbm.interpret.curves", "intervention_curve": "sparsecbm.interpret.curves",
    "InterventionResult": "sparsecbm.interpret.intervention", "parse_set": "sparsecbm.interpret.intervention",
    "Edit": "sparsecbm.interpret.intervention",
    "ExplanationSet": "sparsecbm.interpret.explanation",
    "InterventionError": "sparsecbm.errors", "DataError": "sparsecbm.errors", "ConfigError": "sparsecbm.errors",
    "CheckpointError": "sparsecbm.errors", "SparseCBMError": "sparsecbm.errors",
    "RunResult": "sparsecbm.run_result",
}
__all__ = [*sorted(_EXPORTS), "__version__"]
__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)
