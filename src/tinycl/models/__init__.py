"""Models, their registry, layer tables and the frozen/adaptive split."""

from tinycl.models import mobilenet_v2, phinet  # noqa: E402, F401, I001  (registers them)
from tinycl.models.frozen import FrozenBatchNorm2d, FrozenStage, freeze_stage, state_digest
from tinycl.models.probe import inspecting
from tinycl.models.registry import create_model, model_names, register_model
from tinycl.models.split import check_lr_layer, layer_sequence, split
from tinycl.models.table import LayerInfo, layer_table

__all__ = [
    "FrozenBatchNorm2d",
    "FrozenStage",
    "LayerInfo",
    "check_lr_layer",
    "create_model",
    "freeze_stage",
    "inspecting",
    "layer_sequence",
    "layer_table",
    "model_names",
    "register_model",
    "split",
    "state_digest",
]
