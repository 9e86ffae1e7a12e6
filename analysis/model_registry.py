"""The table of network kinds, ``name -> builder``, filled by ``@register_model(name)`` where each kind is defined.

BasicSR's ``ARCH_REGISTRY`` pattern: the module that defines a network registers its builder, so no factory
has to know (or import) every model. :mod:`analysis.models` registers ``plain``, ``equivariant``, ``tl``, ``sa``
and ``sa-global``; :mod:`analysis.e2cnn_ref` registers ``e2cnn``; a research variant registers itself through
:func:`analysis.registry.register`. The ``analysis`` package imports every module that defines a kind
(``analysis/__init__.py``), so the table is full as soon as any part of the package is imported.

A builder takes the shared options by keyword (:data:`SHARED_OPTIONS`, checked by
:func:`analysis.models.build_model`) and declares its own keyword options in its signature; an option that no
parameter of the builder names is refused (:meth:`Registry.options`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator

from torch import nn

from symmetry.errors import UsageError

Builder = Callable[..., nn.Module]
SHARED_OPTIONS = ("group", "scale", "in_channels", "width", "depth", "kernel_size", "basis", "tail")
"""Options every builder receives (``build_model``'s keyword arguments with defaults)."""


class Registry:
    """Builders by name, in registration order; iterates over the names (``name in MODELS``, ``", ".join(MODELS)``)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._builders: dict[str, Builder] = {}

    def register(self, name: str) -> Callable[[Builder], Builder]:
        """Decorator: ``@MODELS.register("mynet") def build(**options) -> nn.Module``; a taken name is refused."""

        def wrap(builder: Builder) -> Builder:
            if name in self._builders:
                raise UsageError(f"{self.what} {name!r} is already registered; choose another name")
            self._builders[name] = builder
            return builder

        return wrap

    def get(self, name: str) -> Builder:
        """The builder registered as ``name``; an unknown name is a :class:`UsageError` listing the known ones."""
        if name not in self._builders:
            raise UsageError(f"unknown {self.what} {name!r}; choose one of {', '.join(self._builders)}")
        return self._builders[name]

    def options(self, name: str) -> set[str] | None:
        """The keyword options ``name``'s builder takes beyond the shared ones; ``None`` when it takes any."""
        parameters = inspect.signature(self.get(name)).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return None
        return {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL} - set(SHARED_OPTIONS)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._builders))

    def __len__(self) -> int:
        return len(self._builders)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._builders)})"


MODELS = Registry("model kind")
"""Every network kind :func:`analysis.models.build_model` and :func:`analysis.registry.build_network` build."""
register_model = MODELS.register
