"""Model registry: ``create_model(name, **kw)`` as in timm."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from tinycl.errors import TinyclError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = builder
        return builder

    return decorate


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; an unknown name is a user error naming the known ones."""
    if name not in _REGISTRY:
        raise TinyclError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    return _REGISTRY[name](**kwargs)


@register_model("mobilenet_v1")
def _mobilenet_v1(num_classes: int = 50, width: float = 1.0, **kwargs) -> nn.Module:
    from tinycl.models.mobilenet_v1 import MobileNetV1

    return MobileNetV1(num_classes=num_classes, width=width, **kwargs)
