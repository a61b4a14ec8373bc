"""Per-concept sparse subnetworks: masked layers, injector, scorers, schedules, reports."""

from sparsecbm.sparsity.backbone import SubnetworkBackbone
from sparsecbm.sparsity.injector import inject, remove
from sparsecbm.sparsity.layers import MaskedLinear, SubnetworkState, UnitGroup
from sparsecbm.sparsity.pruning import Pruner, PruningCallback, scheduled_sparsity
from sparsecbm.sparsity.report import export_masks, load_masks, materialize, subnetwork_stats, write_reports

__all__ = [
    "MaskedLinear", "Pruner", "PruningCallback", "SubnetworkBackbone", "SubnetworkState", "UnitGroup",
    "export_masks", "inject", "load_masks", "materialize", "remove", "scheduled_sparsity", "subnetwork_stats",
    "write_reports",
]
