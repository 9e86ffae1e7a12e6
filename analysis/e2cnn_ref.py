"""The same EDSR-style backbone built from e2cnn's ``R2Conv``: an external cross-check.

Features are ``width`` regular fields of ``rotN`` (``Rot2dOnR2(N)``) or ``dihN``
(``FlipRot2dOnR2(N)``); image channels are trivial fields. The SR upsampler is
e2cnn's bilinear ``R2Upsampling`` followed by an ``R2Conv`` (equivariant, but not a
pixel shuffle). e2cnn is imported lazily: the rest of the package works without it.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from analysis.model_registry import register_model
from analysis.models import UPSAMPLE_KERNEL_SIZE, Backbone, ResBlock, upsample_stages
from symmetry.errors import UsageError


def _e2cnn():
    try:
        from e2cnn import gspaces
        from e2cnn import nn as enn
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UsageError("the 'e2cnn' model needs e2cnn: install the e2cnn extra (pip install '.[e2cnn]')") from exc
    return gspaces, enn


def _gspace(group: str):
    gspaces, _ = _e2cnn()
    key = group.strip().lower()
    if m := re.fullmatch(r"rot(\d+)", key):
        return gspaces.Rot2dOnR2(int(m.group(1)))
    if m := re.fullmatch(r"dih(\d+)", key):
        return gspaces.FlipRot2dOnR2(int(m.group(1)))
    raise UsageError(f"the e2cnn reference supports rotN and dihN groups, got {group!r}")


class _TensorModule(nn.Module):
    """Wraps an e2cnn module so that it maps plain tensors to plain tensors (ignores deformations)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        _, enn = _e2cnn()
        return self.module(enn.GeometricTensor(x, self.module.in_type)).tensor


class E2CNNNet(Backbone):
    """EDSR-style backbone with ``R2Conv`` layers on regular representations (trivial input/output fields)."""

    def __init__(
        self,
        *,
        group: str = "rot4",
        scale: int = 1,
        in_channels: int = 3,
        width: int = 16,
        depth: int = 4,
        kernel_size: int = 5,
    ) -> None:
        _, enn = _e2cnn()
        gs = _gspace(group)
        image = enn.FieldType(gs, [gs.trivial_repr] * in_channels)
        feat = enn.FieldType(gs, [gs.regular_repr] * width)

        def conv(a, b, k=kernel_size):
            return _TensorModule(enn.R2Conv(a, b, kernel_size=k, padding=k // 2))

        upsampler = [
            _TensorModule(
                enn.SequentialModule(
                    enn.R2Upsampling(feat, s, mode="bilinear"),
                    enn.R2Conv(feat, feat, kernel_size=UPSAMPLE_KERNEL_SIZE, padding=UPSAMPLE_KERNEL_SIZE // 2),
                )
            )
            for s in upsample_stages(scale)
        ]
        super().__init__(
            conv(image, feat),
            [ResBlock(conv(feat, feat), conv(feat, feat)) for _ in range(depth)],
            conv(feat, feat),
            upsampler,
            conv(feat, image),
            scale=scale,
            in_channels=in_channels,
        )
        self.group_name = group
        self.width = width


@register_model("e2cnn")
def _e2cnn_net(shared: dict) -> E2CNNNet:
    """The ``e2cnn`` kind: e2cnn's own (Fourier) basis and an equivariant tail."""
    basis, tail = shared.pop("basis"), shared.pop("tail")
    if basis != "fourier" or tail != "equivariant":
        raise UsageError("the e2cnn model has its own basis and an equivariant tail; drop basis/tail")
    return E2CNNNet(**shared)
