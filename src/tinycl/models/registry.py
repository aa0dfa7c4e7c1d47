"""Model registry: ``create_model(name, **kw)`` as in timm, and each model's default LR layer."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from tinycl.errors import TinyclError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

# The latent-replay layer (last layer of the frozen stage) a model is cut at when the user names
# none. mobilenet_v1: ar1-pytorch's split, conv5_4/dw (DESIGN.md, layer numbering). The others have
# no published split at these sizes; Paissan et al. (CVPRW 2024) train the last blocks of
# MobileNetV2 and PhiNet. phinet: block 4, the last block whose output is still 4x4 at 64 px
# (blocks 5-7 train). mobilenet_v2: block 16, the last residual block, so that the adaptive stage
# (block 17, the 1280-channel conv, the head) is a chain the C runtime trains and exports; at
# block 13 (4x4) the default run took 195 s here against 128 s, for 36.1 % against 34.3 %
# (tinycl run --model mobilenet_v2 [--lr-layer 13], README Results). ``tinycl layers MODEL`` prints the value;
# ``register_model(name, lr_layer=...)`` sets it for a model registered elsewhere.
_DEFAULT_LR_LAYERS: dict[str, int] = {"mobilenet_v1": 19, "mobilenet_v2": 16, "phinet": 5}


def register_model(
    name: str, lr_layer: int | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model builder under ``name``; ``lr_layer`` is its default LR layer."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = builder
        if lr_layer is not None:
            _DEFAULT_LR_LAYERS[name] = lr_layer
        return builder

    return decorate


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; an unknown name is a user error naming the known ones."""
    _check_known(name)
    return _REGISTRY[name](**kwargs)


def default_lr_layer(model_name: str) -> int:
    """The LR layer ``model_name`` is split at when ``--lr-layer`` is not given."""
    _check_known(model_name)
    if model_name not in _DEFAULT_LR_LAYERS:
        raise TinyclError(f"model {model_name!r} registers no default LR layer: give --lr-layer "
                          f"(tinycl layers {model_name} lists its layers)")
    return _DEFAULT_LR_LAYERS[model_name]


def _check_known(name: str) -> None:
    if name not in _REGISTRY:
        raise TinyclError(f"unknown model {name!r}; known models: {', '.join(model_names())}")


@register_model("mobilenet_v1")
def _mobilenet_v1(num_classes: int = 50, width: float = 1.0, **kwargs) -> nn.Module:
    from tinycl.models.mobilenet_v1 import MobileNetV1

    return MobileNetV1(num_classes=num_classes, width=width, **kwargs)
