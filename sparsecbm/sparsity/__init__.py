"""Per-concept sparse subnetworks: masked layers, injector, scorers, schedules, reports."""

from sparsecbm.sparsity.backbone import SubnetworkBackbone
from sparsecbm.sparsity.injector import inject, remove
from sparsecbm.sparsity.layers import MaskedLinear, SubnetworkState, UnitGroup
from sparsecbm.sparsity.pruning import Pruner
from sparsecbm.sparsity.schedule import Schedule, scheduled_sparsity
from sparsecbm.sparsity.scorers import (
    FisherScorer,
    MagnitudeScorer,
    MovementScorer,
    OBertScorer,
    RandomScorer,
    Scorer,
    SignedTaylorScorer,
    TaylorScorer,
    make_scorer,
)
from sparsecbm.sparsity.specificity import CrossMask, cross_mask
from sparsecbm.sparsity.subnetwork_stats import (
    export_masks,
    load_masks,
    materialize,
    subnetwork_stats,
    write_reports,
)

__all__ = [
    "CrossMask", "FisherScorer", "MagnitudeScorer", "MaskedLinear", "MovementScorer", "OBertScorer", "Pruner",
    "RandomScorer", "Schedule", "Scorer", "SignedTaylorScorer", "SubnetworkBackbone", "SubnetworkState", "TaylorScorer", "UnitGroup",
    "cross_mask", "export_masks", "inject", "load_masks", "make_scorer", "materialize", "remove",
    "scheduled_sparsity", "subnetwork_stats", "write_reports",
]
