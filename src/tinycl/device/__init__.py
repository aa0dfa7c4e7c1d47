"""Device cost model: per-layer MACs and bytes, device memory layout, targets, latency/energy."""

from tinycl.device.costs import LayerCost, StageCost, layer_costs, stage_cost
from tinycl.device.estimate import CostConfig, CostReport, estimate, report_to_dict
from tinycl.device.latency import (
    BatteryLifetime,
    Comparison,
    PassBasis,
    TargetEstimate,
    Workload,
    battery_lifetime,
    compare,
    make_workload,
)
from tinycl.device.memory import MemoryBreakdown, latent_bytes, memory_breakdown, replay_bytes
from tinycl.device.targets import Figure, RateBasis, Target, load_target, target_names

__all__ = [
    "BatteryLifetime",
    "Comparison",
    "CostConfig",
    "CostReport",
    "Figure",
    "LayerCost",
    "MemoryBreakdown",
    "PassBasis",
    "RateBasis",
    "StageCost",
    "Target",
    "TargetEstimate",
    "Workload",
    "battery_lifetime",
    "compare",
    "estimate",
    "latent_bytes",
    "layer_costs",
    "load_target",
    "make_workload",
    "memory_breakdown",
    "replay_bytes",
    "report_to_dict",
    "stage_cost",
    "target_names",
]
