"""Networks by name, as BasicSR's ``build_network``: ``build_network("equivariant", group="rot8", width=8)``.

Every name builds through :func:`analysis.models.build_model` (the one place models are defined); its options
pass through unchanged, so a kind or option added there (``tl``, ``basis=``, ...) works here without an edit.
Nothing is imported until a network is built, so an optional dependency that fails to import (e2cnn) breaks only
the kinds that need it. :func:`register` adds a builder under a new name (a research variant) without touching
the package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from symmetry.errors import UsageError

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: ``@register("mynet") def build(**kwargs) -> nn.Module``; a taken name is a :class:`UsageError`."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS or name in model_kinds():
            raise UsageError(f"network name {name!r} is already registered")
        _BUILDERS[name] = builder
        return builder

    return wrap


def model_kinds() -> tuple[str, ...]:
    """The kinds :func:`analysis.models.build_model` knows (read when asked: it may grow)."""
    from analysis.models import MODEL_KINDS

    return tuple(MODEL_KINDS)


def network_names() -> tuple[str, ...]:
    """Every name :func:`build_network` accepts."""
    return model_kinds() + tuple(_BUILDERS)


def build_network(name: str, **kwargs: Any) -> nn.Module:
    """The network ``name`` with options ``kwargs`` (those of :func:`analysis.models.build_model` for its kinds)."""
    if name in _BUILDERS:
        return _BUILDERS[name](**kwargs)
    from analysis.models import build_model

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
        from analysis.models import GroupAverage

        model = GroupAverage(model, cfg.average)
    return model


__all__ = ["build_network", "network_from_config", "network_names", "register"]
