"""Restoration networks: one EDSR-style backbone in four flavours (theory.md, section 3).

``build_model(kind, group=..., scale=..., in_channels=..., width=..., depth=..., kernel_size=...)``
with ``kind`` in :data:`MODEL_KINDS`:

- ``plain``: ordinary convolutions; its width is chosen by :func:`matched_plain_width` so
  the parameter count matches ``equivariant`` (override with ``plain_width=``).
- ``equivariant``: F-Conv style rotation-equivariant convolutions
  (:mod:`analysis.layers`), equivariant through the whole network including the SR
  upsampler; exact for quarter turns on the grid.
- ``sa``: the sample-adaptive equivariant network of theory.md section 3: the same
  layers with every filter evaluated on the mesh deformed by a per-sample ``D_w``
  (rotation by ``theta0``, axis scales ``cx, cy``) predicted by a small hypernetwork.
- ``e2cnn``: the same backbone built from e2cnn's ``R2Conv`` (:mod:`analysis.e2cnn_ref`),
  an external cross-check.

The backbone: head conv, ``depth`` residual blocks (conv-ReLU-conv plus identity), a
body conv and a long skip over the body, then for ``scale > 1`` a pixel-shuffle
upsampler (x2 stages, or one x3 stage), then the tail conv. The network predicts a
residual: added to its input for ``scale == 1`` (denoising, deraining), to the bicubic
upsampled input for SR (a fixed map that commutes with quarter turns and flips, so it
keeps the equivariance exact). The tail starts at :data:`TAIL_INIT_SCALE` times its usual
initialisation, so every flavour starts close to the identity (or bicubic) map.
``width`` counts fields: an equivariant feature has ``width * |G|`` channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from analysis.layers import GroupConv, GroupUpsample, LiftConv, ProjectConv, cyclic_group
from symmetry.errors import UsageError
from symmetry.transforms import imresize

MODEL_KINDS = ("plain", "equivariant", "sa", "e2cnn")
UPSAMPLE_KERNEL_SIZE = 3
"""Kernel size of the sub-pixel convolution in each upsampling stage (as in EDSR)."""
HYPER_WIDTH = 16
"""Channels of the sample-adaptive hypernetwork's convolutions and hidden linear layer."""
HYPER_LAYERS = 3
"""Number of stride-2 convolutions in the hypernetwork before global pooling."""
TAIL_INIT_SCALE = 0.1
"""Factor on the tail conv's initial weights: the initial residual is small for every flavour."""
MAX_LOG_SCALE = math.log(2.0)
"""Bound on ``|log cx|``, ``|log cy|``: the predicted axis scales lie in (1/2, 2)."""


def upsample_stages(scale: int) -> list[int]:
    """Factors of the upsampling stages: x2 stages for powers of two, else a single ``scale`` stage."""
    if scale < 1:
        raise UsageError(f"scale must be >= 1, got {scale}")
    if scale == 1:
        return []
    if scale & (scale - 1) == 0:
        return [2] * int(math.log2(scale))
    return [scale]


class ResBlock(nn.Module):
    """``x + conv2(relu(conv1(x)))``; the convs accept an optional per-sample deformation."""

    def __init__(self, conv1: nn.Module, conv2: nn.Module) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2

    def forward(self, x: torch.Tensor, deform_inv: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x, deform_inv)), deform_inv)


class Backbone(nn.Module):
    """EDSR-style backbone; the flavour is fixed by the conv modules passed in.

    Every conv module takes ``(x, deform_inv=None)``; only the sample-adaptive network
    passes a deformation. Subclasses may override :meth:`deformation`.
    """

    def __init__(
        self,
        head: nn.Module,
        blocks: list[nn.Module],
        body_tail: nn.Module,
        upsampler: list[nn.Module],
        tail: nn.Module,
        *,
        scale: int,
        in_channels: int,
    ) -> None:
        super().__init__()
        self.head = head
        self.body = nn.ModuleList(blocks)
        self.body_tail = body_tail
        self.upsampler = nn.ModuleList(upsampler)
        self.tail = tail
        self.scale = scale
        self.in_channels = in_channels
        with torch.no_grad():
            for p in self.tail.parameters():
                p.mul_(TAIL_INIT_SCALE)

    def deformation(self, x: torch.Tensor) -> torch.Tensor | None:
        """Per-sample ``D_w^-1`` ``(B, 2, 2)``, or ``None`` for a sample-independent network."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x, self.deformation(self._checked(x)))

    def _checked(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected a (B, {self.in_channels}, H, W) batch, got shape {tuple(x.shape)}")
        return x

    def _forward(self, x: torch.Tensor, d: torch.Tensor | None) -> torch.Tensor:
        feat = self.head(x, d)
        y = feat
        for block in self.body:
            y = block(y, d)
        y = self.body_tail(y, d) + feat  # long skip
        for up in self.upsampler:
            y = up(y, d)
        out = self.tail(y, d)
        if self.scale == 1:
            return out + x
        return out + imresize(x, self.scale)  # the same map as the bicubic baseline (analysis.tasks.baseline)


# --- plain -------------------------------------------------------------------------------


class PlainConv(nn.Conv2d):
    """``nn.Conv2d`` with 'same' zero padding that ignores the deformation argument."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, deform_inv: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


class PlainUpsample(nn.Module):
    """EDSR upsampling stage: conv to ``channels * scale**2`` then ``PixelShuffle(scale)``."""

    def __init__(self, channels: int, scale: int, kernel_size: int = UPSAMPLE_KERNEL_SIZE) -> None:
        super().__init__()
        self.conv = PlainConv(channels, channels * scale * scale, kernel_size)
        self.scale = scale

    def forward(self, x: torch.Tensor, deform_inv: torch.Tensor | None = None) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), self.scale)


class PlainNet(Backbone):
    """The backbone with ordinary convolutions of ``width`` channels."""

    def __init__(self, *, scale: int = 1, in_channels: int = 3, width: int = 16, depth: int = 4, kernel_size: int = 5):
        k = kernel_size
        super().__init__(
            PlainConv(in_channels, width, k),
            [ResBlock(PlainConv(width, width, k), PlainConv(width, width, k)) for _ in range(depth)],
            PlainConv(width, width, k),
            [PlainUpsample(width, s) for s in upsample_stages(scale)],
            PlainConv(width, in_channels, k),
            scale=scale,
            in_channels=in_channels,
        )
        self.width = width


def plain_parameter_count(width: int, *, scale: int, in_channels: int, depth: int, kernel_size: int) -> int:
    """Closed-form parameter count of :class:`PlainNet` (equals ``count_parameters(PlainNet(...))``)."""
    k2, u2, c = kernel_size**2, UPSAMPLE_KERNEL_SIZE**2, in_channels
    n = c * width * k2 + width  # head
    n += (2 * depth + 1) * (width * width * k2 + width)  # blocks and body conv
    n += sum(width * width * s * s * u2 + width * s * s for s in upsample_stages(scale))
    n += width * c * k2 + c  # tail
    return n


# --- equivariant -------------------------------------------------------------------------


class EquivariantNet(Backbone):
    """Rotation-equivariant backbone (F-Conv style, theory.md section 3 with ``D_w = I``).

    ``width`` regular fields of the cyclic group ``group``: features have
    ``width * |G|`` channels. Exactly equivariant to quarter turns (``|G|`` divisible
    by 4), approximately to the other rotations of ``group``.
    """

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
        g = cyclic_group(group)
        k = kernel_size
        super().__init__(
            LiftConv(in_channels, width, g, k),
            [ResBlock(GroupConv(width, width, g, k), GroupConv(width, width, g, k)) for _ in range(depth)],
            GroupConv(width, width, g, k),
            [GroupUpsample(width, s, g, UPSAMPLE_KERNEL_SIZE) for s in upsample_stages(scale)],
            ProjectConv(width, in_channels, g, k),
            scale=scale,
            in_channels=in_channels,
        )
        self.group = g
        self.width = width


# --- sample-adaptive ---------------------------------------------------------------------


class TransformHyperNet(nn.Module):
    """Predicts per-sample ``(theta0, cx, cy)`` from the input image (theory.md, section 3).

    A few stride-2 convolutions, global average pooling and two linear layers; the last
    linear layer starts at zero, and the parametrisation maps zero to the identity:
    ``theta0 = (pi / N) tanh(z0)`` (an offset within one group step), ``cx = exp(L tanh(z1))``,
    ``cy = exp(L tanh(z2))`` with ``L = MAX_LOG_SCALE``.
    """

    def __init__(self, in_channels: int, group_order: int, hidden: int = HYPER_WIDTH) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(HYPER_LAYERS):
            layers += [nn.Conv2d(c, hidden, 3, stride=2, padding=1), nn.ReLU()]
            c = hidden
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.hidden = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 3)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.max_angle = math.pi / group_order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3)``: ``theta0`` (radians), ``cx``, ``cy``."""
        z = self.out(F.relu(self.hidden(self.features(x))))
        theta = self.max_angle * torch.tanh(z[:, 0])
        scales = torch.exp(MAX_LOG_SCALE * torch.tanh(z[:, 1:]))
        return torch.cat([theta[:, None], scales], dim=1)


def inverse_deformation(params: torch.Tensor) -> torch.Tensor:
    """``D_w^-1`` for ``D_w = R(theta0) diag(cx, cy)``: ``diag(1/cx, 1/cy) R(-theta0)``, ``(B, 2, 2)``."""
    theta, cx, cy = params.unbind(-1)
    c, s = torch.cos(theta), torch.sin(theta)
    row0 = torch.stack([c / cx, s / cx], dim=-1)
    row1 = torch.stack([-s / cy, c / cy], dim=-1)
    return torch.stack([row0, row1], dim=-2)


class SampleAdaptiveNet(EquivariantNet):
    """Sample-adaptive equivariant network (SA-Conv, theory.md section 3).

    Same layers and state-dict keys as :class:`EquivariantNet` plus ``hyper.*``: every
    filter for element ``A`` is ``phi(A^-1 D_w^-1 delta)`` with ``D_w`` predicted per
    sample by :class:`TransformHyperNet`, so filters are per sample and each layer is
    one grouped convolution over the batch. With zero hypernetwork output it equals the
    equivariant network with the same weights.
    """

    def __init__(self, *, hyper_width: int = HYPER_WIDTH, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hyper = TransformHyperNet(self.in_channels, self.group.order, hyper_width)

    def forward(self, x: torch.Tensor, transform: torch.Tensor | None = None) -> torch.Tensor:
        """Restore ``x``; ``transform`` ``(B, 3)`` or ``(3,)``, if given, replaces the predicted ``(theta0, cx, cy)``.

        The override is for controlled studies (the identity, a known per-sample deformation, a constant one);
        the hypernetwork is then not evaluated and gets no gradient.
        """
        x = self._checked(x)
        if transform is None:
            return self._forward(x, self.deformation(x))
        transform = torch.as_tensor(transform, dtype=x.dtype, device=x.device).expand(x.shape[0], 3)
        return self._forward(x, inverse_deformation(transform))

    def predict_transform(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample ``(theta0, cx, cy)``, ``(B, 3)``."""
        return self.hyper(x)

    def deformation(self, x: torch.Tensor) -> torch.Tensor:
        return inverse_deformation(self.predict_transform(x))

    def load_equivariant_state(self, state_dict: dict[str, torch.Tensor]) -> list[str]:
        """Start from an ``equivariant`` checkpoint; returns the hypernetwork keys left at their init.

        Raises :class:`UsageError` if any non-hypernetwork key is missing or unexpected.
        """
        result = self.load_state_dict(state_dict, strict=False)
        bad_missing = [k for k in result.missing_keys if not k.startswith("hyper.")]
        if bad_missing or result.unexpected_keys:
            raise UsageError(
                f"not an equivariant checkpoint for this architecture: missing {bad_missing}, "
                f"unexpected {list(result.unexpected_keys)}"
            )
        return list(result.missing_keys)


# --- factory -----------------------------------------------------------------------------


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matched_plain_width(
    group: str = "rot4",
    width: int = 16,
    depth: int = 4,
    kernel_size: int = 5,
    *,
    scale: int = 1,
    in_channels: int = 3,
) -> int:
    """Width of ``plain`` whose parameter count is closest to ``equivariant`` with the same settings."""
    target = count_parameters(
        EquivariantNet(
            group=group, scale=scale, in_channels=in_channels, width=width, depth=depth, kernel_size=kernel_size
        )
    )

    def count(w: int) -> int:
        return plain_parameter_count(w, scale=scale, in_channels=in_channels, depth=depth, kernel_size=kernel_size)

    w = 1
    while count(w + 1) <= target:
        w += 1
    return w if abs(count(w) - target) <= abs(count(w + 1) - target) else w + 1


def build_model(
    kind: str,
    *,
    group: str = "rot4",
    scale: int = 1,
    in_channels: int = 3,
    width: int = 16,
    depth: int = 4,
    kernel_size: int = 5,
    **kwargs,
) -> nn.Module:
    """Build a restoration network; ``(B, C, H, W) -> (B, C, H*scale, W*scale)``.

    ``kind`` in :data:`MODEL_KINDS`. Extra keyword arguments: ``plain_width`` (``plain``,
    overrides the matched width), ``hyper_width`` (``sa``).
    """
    common = dict(scale=scale, in_channels=in_channels, depth=depth, kernel_size=kernel_size)
    allowed = {"plain": {"plain_width"}, "equivariant": set(), "sa": {"hyper_width"}, "e2cnn": set()}
    if kind not in MODEL_KINDS:
        raise UsageError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    extra = set(kwargs) - allowed[kind]
    if extra:
        raise UsageError(f"build_model({kind!r}) got unexpected options: {', '.join(sorted(extra))}")
    if kind == "plain":
        plain_width = kwargs.get("plain_width") or matched_plain_width(group, width, **common)
        return PlainNet(width=plain_width, **common)
    if kind == "equivariant":
        return EquivariantNet(group=group, width=width, **common)
    if kind == "sa":
        return SampleAdaptiveNet(group=group, width=width, hyper_width=kwargs.get("hyper_width", HYPER_WIDTH), **common)
    from analysis.e2cnn_ref import E2CNNNet

    return E2CNNNet(group=group, width=width, **common)
