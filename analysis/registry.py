"""Networks by name, as BasicSR's ``build_network``: ``build_network("equivariant", group="rot8", width=8)``.

Every name builds through :func:`analysis.models.build_model` from the one table of kinds
(:data:`analysis.model_registry.MODELS`), which each model's module fills where the model is defined; options
pass through unchanged, so a kind or option added there (``tl``, ``basis=``, ...) works here without an edit.
e2cnn itself is imported only when an ``e2cnn`` network is built, so a missing e2cnn breaks only that kind.
:func:`register` adds a builder under a new name (a research variant) without touching the package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from analysis import e2cnn_ref  # noqa: F401  (registers the e2cnn kind; e2cnn itself loads when one is built)
from analysis.model_registry import MODELS
from analysis.models import GroupAverage, build_model


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: ``@register("mynet") def build(**options) -> nn.Module``; a taken name is a :class:`UsageError`.

    The builder receives the shared options of :func:`analysis.models.build_model` (``group``, ``scale``,
    ``in_channels``, ``width``, ``depth``, ``kernel_size``, ``basis``, ``tail``) and any others given.
    """

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        def entry(shared: dict, **options: Any) -> nn.Module:
            return builder(**shared, **options)

        MODELS.register(name)(entry)
        return builder

    return wrap


def model_kinds() -> tuple[str, ...]:
    """The kinds :func:`analysis.models.build_model` knows, registered ones included."""
    return tuple(MODELS)


def network_names() -> tuple[str, ...]:
    """Every name :func:`build_network` accepts."""
    return model_kinds()


def build_network(name: str, **kwargs: Any) -> nn.Module:
    """The network ``name`` with options ``kwargs`` (those of :func:`analysis.models.build_model`)."""
    return build_model(name, **kwargs)


def network_from_config(cfg) -> nn.Module:
    """The network a resolved :class:`analysis.config.TrainConfig` describes (freshly initialised, global RNG).

    ``cfg.average`` wraps it in :class:`analysis.models.GroupAverage` (Lemma 4.1).
    """
    model = build_network(
        cfg.model,
        group=cfg.group,
        scale=cfg.scale or 1,
        in_channels=3 if cfg.channels == "rgb" else 1,
        width=cfg.width,
        depth=cfg.depth,
        kernel_size=cfg.kernel_size,
        **dict(cfg.model_options or {}),
    )
    if getattr(cfg, "average", None):
        model = GroupAverage(model, cfg.average)
    return model


__all__ = ["build_network", "network_from_config", "network_names", "register"]
