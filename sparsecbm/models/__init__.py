"""Backbones, heads and the concept-bottleneck model."""

from sparsecbm.models.backbone import Backbone, load_tokenizer, pool
from sparsecbm.models.cbm import CBMOutput, ConceptBottleneckModel, ConceptOutputs, concept_activations

__all__ = [
    "Backbone", "CBMOutput", "ConceptBottleneckModel", "ConceptOutputs", "concept_activations", "load_tokenizer",
    "pool",
]
