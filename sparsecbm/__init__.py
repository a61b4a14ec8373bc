"""sparsecbm: sparse concept-bottleneck language models that explain themselves."""

from sparsecbm.checkpoint import load_checkpoint
from sparsecbm.concepts import ConceptSet, ConceptSpec, LabelSpec

__version__ = "0.1.0"
__all__ = ["ConceptSet", "ConceptSpec", "LabelSpec", "load_checkpoint", "__version__"]
