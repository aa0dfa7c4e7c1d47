"""Each model's default LR layer: the registry's, valid for the model, printed by ``tinycl layers``."""


import pytest
from clitools import cli
from torch import nn

from tinycl.config import ModelConfig
from tinycl.errors import TinyclError
from tinycl.models import check_lr_layer, create_model, layer_table, model_names, register_model, registry
from tinycl.models.registry import default_lr_layer


def test_every_model_has_a_default_lr_layer_it_can_be_split_at():
    assert {name: default_lr_layer(name) for name in model_names()} == {
        "mobilenet_v1": 19, "mobilenet_v2": 16, "phinet": 5}
    for name in model_names():
        model = create_model(name, num_classes=10, width=ModelConfig.width)
        layer = default_lr_layer(name)
        check_lr_layer(model, layer)
        rows = layer_table(model, ModelConfig.res)
        # A frozen stage and a trainable stage with at least one block besides pool and head.
        assert any(r.kind not in ("pool", "linear") for r in rows[layer + 1:])
        h, w = rows[layer].out_shape[1:]
        assert 2 <= h <= 8 and h == w  # at tinycl run's 64 px: a 4x4 or 8x8 latent


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "phinet"])
def test_layers_prints_and_marks_the_default(name):
    code, out, err = cli("layers", name)
    assert code == 0, err
    layer = default_lr_layer(name)
    assert f"default LR layer: {layer} (" in out
    marked = [line for line in out.splitlines() if "│ default LR layer" in line]
    assert len(marked) == 1 and marked[0].split("│")[1].strip() == str(layer)
    # tinycl run's defaults: width 0.25 at 64 px
    assert f"{name} width {ModelConfig.width:g} at {ModelConfig.res}x{ModelConfig.res}" in out


def test_unknown_models_and_models_without_a_default_are_one_line_errors(monkeypatch):
    with pytest.raises(TinyclError, match="unknown model 'resnet'; known models: mobilenet_v1"):
        default_lr_layer("resnet")
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_DEFAULT_LR_LAYERS", dict(registry._DEFAULT_LR_LAYERS))

    @register_model("tiny_no_default")
    def _tiny(num_classes: int = 10, **kwargs) -> nn.Module:
        return nn.Linear(4, num_classes)

    with pytest.raises(TinyclError, match="registers no default LR layer: give --lr-layer"):
        default_lr_layer("tiny_no_default")

    @register_model("tiny_with_default", lr_layer=3)
    def _tiny2(num_classes: int = 10, **kwargs) -> nn.Module:
        return nn.Linear(4, num_classes)

    assert default_lr_layer("tiny_with_default") == 3


def test_sparse_sweep_takes_the_registry_defaults():
    from tinycl.cli.sparse_sweep import lr_layer_map

    assert lr_layer_map(None, ["mobilenet_v1", "mobilenet_v2", "phinet"]) == {
        "mobilenet_v1": 19, "mobilenet_v2": 16, "phinet": 5}
    assert lr_layer_map("phinet=4", ["mobilenet_v1", "phinet"]) == {"mobilenet_v1": 19, "phinet": 4}
    assert lr_layer_map("7", ["mobilenet_v2", "phinet"]) == {"mobilenet_v2": 7, "phinet": 7}
