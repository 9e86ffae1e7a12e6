"""Restoration networks: one EDSR-style backbone in several flavours (theory.md, section 3).

``build_model(kind, group=..., scale=..., in_channels=..., width=..., depth=..., kernel_size=...,
basis=..., tail=..., match=...)`` with ``kind`` in :data:`MODEL_KINDS`:

- ``plain``: ordinary convolutions. ``match="parameters"`` (default) chooses the width by
  :func:`matched_plain_width` so the parameter count matches ``equivariant``;
  ``match="channels"`` uses ``width * |G|`` channels, the equivariant network's tensor
  channels (the authors' baselines). ``plain_width=`` overrides both.
- ``equivariant``: group-equivariant convolutions with basis-expanded filters (:mod:`analysis.layers`;
  ``basis="fourier"`` a Fourier series (not F-Conv: no PCA step) or ``"bicubic"`` B-Conv) for ``rotN``,
  ``dihN``, ``flip``, ``flipud``; exact on the grid for quarter turns and flips. ``mask="authors"`` takes the
  authors' tap mask instead of the disk mask.
- ``tl``: the authors' transformation-learned network: every basis layer owns a learnable
  deformation ``D = R(theta0) diag(cx, cy)`` at the identity; filters ``phi(A^-1 D^-1 delta)``. At
  initialisation it computes what ``equivariant`` with the same weights and mask computes. ``variant``:
  ``"authors"`` (default: their ``(theta0, Cx, Cy)`` coordinates of ``D^-1`` and tap mask) or ``"bounded"``;
  ``tie_transform=True`` shares one ``D`` across layers (the only ``tl`` with a conjugate symmetry
  ``D A D^-1``, :func:`conjugate_equivariance_error`; otherwise see :func:`transform_spread`).
- ``sa``: SA-Conv: ``tl`` plus a hypernetwork that predicts per-sample offsets ADDED to every layer's own
  values; its last layer is zero, so ``sa`` starts exactly as ``tl``; :func:`init_sa_from_tl` starts it from
  a trained ``tl``. ``variant="authors"`` (default): their hypernetwork (:class:`AuthorsHyperNet`), unbounded
  offsets ``(dtheta0, dCx, dCy)``, their mask; ``"bounded"``: the earlier :class:`TransformHyperNet`, tanh-bounded
  offsets in ``(theta0, log cx, log cy)``, the disk mask. What still differs from the authors' code:
  docs/models.md.
- ``sa-global``: the earlier design kept for comparison: no per-layer deformation, one
  per-sample ``(theta0, cx, cy)`` from the bounded hypernetwork shared by all layers.
- ``e2cnn``: the same backbone built from e2cnn's ``R2Conv`` (:mod:`analysis.e2cnn_ref`),
  an external cross-check.

``tail="plain"`` (equivariant kinds) is the authors' SR layout: equivariant head and body,
an ordinary pixel-shuffle upsampler and last conv on the ``width * |G|`` channels (not
equivariant as a whole). :class:`GroupAverage` (Lemma 4.1) makes any model exactly
equivariant to a grid-exact group at ``|G|`` times the cost.

The backbone: head conv, ``depth`` residual blocks (conv-ReLU-conv plus identity), a
body conv and a long skip over the body, then for ``scale > 1`` a pixel-shuffle
upsampler (x2 stages, or one x3 stage), then the tail conv. The network predicts a
residual: added to its input for ``scale == 1`` (denoising, deraining), to the bicubic
upsampled input for SR (a fixed map that commutes with quarter turns and flips, so it
keeps the equivariance exact); :meth:`Backbone.skip` is that fixed map. The tail starts at
:data:`TAIL_INIT_SCALE` times its usual initialisation, so every flavour starts close to
the identity (or bicubic) map.
``width`` counts fields: an equivariant feature has ``width * |G|`` channels.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from analysis.basis import BASES, MASKS
from analysis.equivariance import equivariance_error
from analysis.layers import (
    IDENTITY_PARAMETERS,
    BasisConv,
    GroupConv,
    GroupUpsample,
    LiftConv,
    ProjectConv,
    deformation_inverse,
    layer_group,
    parameters_inverse,
    parameters_to_transform,
    transform_to_parameters,
)
from analysis.model_registry import MODELS, register_model
from symmetry.errors import UsageError
from symmetry.groups import Group, GroupElement, get_group
from symmetry.transforms import imresize, transform_image

MODEL_KINDS = MODELS
"""The kinds :func:`build_model` knows, the live table: ``plain``, ``equivariant``, ``tl``, ``sa``, ``sa-global``
(registered below), ``e2cnn`` (:mod:`analysis.e2cnn_ref`) and any research variant registered since."""
LAYOUTS = ("residual", "authors")
"""``layout=``: this project's residual layout, or the authors' EDSR layout (:class:`Backbone`)."""
LAYOUT_KINDS = ("plain", "equivariant", "tl", "sa", "sa-global")
"""The kinds that take ``layout=`` and ``res_scale=`` (built on :class:`Backbone` with this module's convs)."""
AUTHORS_RES_SCALE = 0.1
"""The authors' ``--res_scale`` (their ``demo.sh``): each residual block adds ``0.1 * conv2(relu(conv1(x)))``."""
AUTHORS_LAST_KERNEL_SIZE = 3
"""The authors' last conv (after the upsampler) is 3x3 whatever the body's kernel size."""
RGB_MEAN = (0.4488, 0.4371, 0.4040)
"""EDSR's ``MeanShift``: the DIV2K RGB mean, subtracted from the input and added back to the output."""
TAILS = ("equivariant", "plain")
"""``tail=``: equivariant upsampler and last conv, or the authors' ordinary ones."""
MATCHES = ("parameters", "channels")
"""``match=`` for ``plain``: equal parameter count, or ``width * |G|`` channels."""
UPSAMPLE_KERNEL_SIZE = 3
"""Kernel size of the sub-pixel convolution in each upsampling stage (as in EDSR)."""
HYPER_WIDTH = 16
"""Channels of the sample-adaptive hypernetwork's convolutions and hidden linear layer."""
HYPER_LAYERS = 3
"""Number of stride-2 convolutions in the hypernetwork before global pooling."""
TAIL_INIT_SCALE = 0.1
"""Factor on the tail conv's initial weights: the initial residual is small for every flavour."""
MAX_LOG_SCALE = math.log(2.0)
"""Bound on ``|log cx|``, ``|log cy|`` of the bounded hypernetwork: its predicted axis scales lie in (1/2, 2)."""
VARIANTS = ("authors", "bounded")
"""``variant=`` of ``tl`` and ``sa``: the authors' design (default) or this project's earlier, bounded one."""
AUTHORS_HYPER_FEATURES = 32
"""Channels of the authors' hypernetwork's feature maps (their ``out_channels``; ``hyper_width`` overrides)."""
AUTHORS_HYPER_FIRST = 16
"""Channels of the authors' hypernetwork's first convolution."""
AUTHORS_HYPER_HIDDEN = 16
"""Width of the first hidden layer of the authors' hypernetwork's MLP (the second has half of it)."""
AUTHORS_RGB_RANGE = 255.0
"""The authors' pixel range (``--rgb_range 255``): the hypernetwork reads intensities in 0-255."""
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
"""Rec. 601 luma weights the authors' hypernetwork turns an RGB input into gray with."""
AUTHORS_HYPER_MIN_SIZE = 30
"""Smallest input side the authors' unpadded hypernetwork reads with a 2x2 final feature map (BatchNorm in training
needs more than one value per channel); smaller inputs are edge-padded to it (the authors' patches are >= 48)."""


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
    """``x + res_scale * conv2(relu(conv1(x)))``; the convs accept optional per-sample deformation offsets."""

    def __init__(self, conv1: nn.Module, conv2: nn.Module, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2
        self.res_scale = float(res_scale)

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x, offset)), offset)
        return x + (y if self.res_scale == 1.0 else self.res_scale * y)


def check_layout(layout: str) -> str:
    """``layout`` if it is one of :data:`LAYOUTS`, else a one-line :class:`UsageError`."""
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    return layout


def default_res_scale(layout: str) -> float:
    """The residual-block scale of a layout: the authors' 0.1, or 1 for the residual layout."""
    return AUTHORS_RES_SCALE if check_layout(layout) == "authors" else 1.0


class Backbone(nn.Module):
    """EDSR-style backbone; the flavour is fixed by the conv modules passed in.

    ``layout="residual"`` (this project's): head, blocks, ``body_tail`` conv, long skip, upsampler, tail, plus the
    fixed :meth:`skip` (input, or its bicubic upsampling); the tail starts at :data:`TAIL_INIT_SCALE` of its init.
    ``layout="authors"`` (EDSR as in the authors' ``edsr*.py``): ``MeanShift`` by :data:`RGB_MEAN`, head, blocks
    (with ``res_scale``), an optional ``body_tail`` (``None`` in their equivariant nets), long skip, upsampler,
    tail conv, mean added back; no global skip (:meth:`skip` is zero) and the usual initialisation.

    Every conv module takes ``(x, offset=None)``; only the sample-adaptive networks pass
    per-sample deformation offsets ``(B, 3)`` (``theta0, log cx, log cy``, see
    :mod:`analysis.layers`). Subclasses may override :meth:`deformation`.
    """

    def __init__(
        self,
        head: nn.Module,
        blocks: list[nn.Module],
        body_tail: nn.Module | None,
        upsampler: list[nn.Module],
        tail: nn.Module,
        *,
        scale: int,
        in_channels: int,
        layout: str = "residual",
    ) -> None:
        super().__init__()
        self.head = head
        self.body = nn.ModuleList(blocks)
        self.body_tail = body_tail
        self.upsampler = nn.ModuleList(upsampler)
        self.tail = tail
        self.scale = scale
        self.in_channels = in_channels
        self.layout = check_layout(layout)
        mean = RGB_MEAN if in_channels == 3 else (sum(RGB_MEAN) / 3,) * in_channels
        self.register_buffer("rgb_mean", torch.tensor(mean).view(1, in_channels, 1, 1), persistent=False)
        if layout == "residual":
            with torch.no_grad():
                for p in self.tail.parameters():
                    p.mul_(TAIL_INIT_SCALE)

    def deformation(self, x: torch.Tensor) -> torch.Tensor | None:
        """Per-sample offsets ``(B, 3)`` (``theta0, log cx, log cy``), or ``None`` for a sample-independent network."""
        return None

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed map the learned residual is added to: ``x`` for ``scale == 1``, the bicubic upsampling for SR.

        ``model(x) - model.skip(x)`` is the learned part (the normalisation of
        :func:`analysis.equivariance.equivariance_error` with ``normalisation="learned"``). The authors' layout
        has no global skip: zero, so the learned part is the whole output.
        """
        if self.layout == "authors":
            return x.new_zeros(*x.shape[:-2], x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        if self.scale == 1:
            return x
        return imresize(x, self.scale)  # the same map as the bicubic baseline (analysis.tasks.baseline)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x, self.deformation(self._checked(x)))

    def _checked(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected a (B, {self.in_channels}, H, W) batch, got shape {tuple(x.shape)}")
        return x

    def _forward(self, x: torch.Tensor, d: torch.Tensor | None) -> torch.Tensor:
        authors = self.layout == "authors"
        feat = self.head(x - self.rgb_mean if authors else x, d)
        y = feat
        for block in self.body:
            y = block(y, d)
        if self.body_tail is not None:
            y = self.body_tail(y, d)
        y = y + feat  # long skip
        for up in self.upsampler:
            y = up(y, d)
        if authors:
            return self.tail(y, d) + self.rgb_mean
        return self.tail(y, d) + self.skip(x)


# --- plain -------------------------------------------------------------------------------


class PlainConv(nn.Conv2d):
    """``nn.Conv2d`` with 'same' zero padding that ignores the deformation argument."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


class PlainUpsample(nn.Module):
    """EDSR upsampling stage: conv to ``channels * scale**2`` then ``PixelShuffle(scale)``."""

    def __init__(self, channels: int, scale: int, kernel_size: int = UPSAMPLE_KERNEL_SIZE) -> None:
        super().__init__()
        self.conv = PlainConv(channels, channels * scale * scale, kernel_size)
        self.scale = scale

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), self.scale)


class PlainNet(Backbone):
    """The backbone with ordinary convolutions of ``width`` channels (``layout="authors"``: EDSR itself)."""

    def __init__(
        self,
        *,
        scale: int = 1,
        in_channels: int = 3,
        width: int = 16,
        depth: int = 4,
        kernel_size: int = 5,
        layout: str = "residual",
        res_scale: float | None = None,
    ):
        k = kernel_size
        rs = default_res_scale(layout) if res_scale is None else res_scale
        last = AUTHORS_LAST_KERNEL_SIZE if layout == "authors" else k
        super().__init__(
            PlainConv(in_channels, width, k),
            [ResBlock(PlainConv(width, width, k), PlainConv(width, width, k), rs) for _ in range(depth)],
            PlainConv(width, width, k),
            [PlainUpsample(width, s) for s in upsample_stages(scale)],
            PlainConv(width, in_channels, last),
            scale=scale,
            in_channels=in_channels,
            layout=layout,
        )
        self.width = width


def plain_parameter_count(
    width: int, *, scale: int, in_channels: int, depth: int, kernel_size: int, layout: str = "residual"
) -> int:
    """Closed-form parameter count of :class:`PlainNet` (equals ``count_parameters(PlainNet(...))``).

    For ``layout="authors"``, width 64, depth 16, kernel 3, scale 2 it is EDSR-baseline x2's 1,369,859.
    """
    k2, u2, c = kernel_size**2, UPSAMPLE_KERNEL_SIZE**2, in_channels
    last2 = AUTHORS_LAST_KERNEL_SIZE**2 if check_layout(layout) == "authors" else k2
    n = c * width * k2 + width  # head
    n += (2 * depth + 1) * (width * width * k2 + width)  # blocks and body conv
    n += sum(width * width * s * s * u2 + width * s * s for s in upsample_stages(scale))
    n += width * c * last2 + c  # tail
    return n


# --- equivariant -------------------------------------------------------------------------


class EquivariantNet(Backbone):
    """Group-equivariant backbone (basis-expanded filters as in F-Conv / B-Conv, theory.md section 3, ``D_w = I``).

    ``width`` regular fields of ``group`` (rotN, dihN, flip, flipud): features have
    ``width * |G|`` channels. With ``tail="equivariant"`` it is exactly equivariant on the
    grid to the grid-exact elements of ``group`` (quarter turns, flips) and approximately
    to the others; ``tail="plain"`` (the authors' SR layout) ends in an ordinary
    upsampler and conv and is not equivariant as a whole. ``learn_deformation`` gives
    every basis layer its own deformation in ``parametrisation`` (the ``tl`` network, :class:`TLNet`).
    ``mask``: ``"disk"`` or ``"authors"`` (:mod:`analysis.basis`; the equivariant upsampler keeps the disk mask:
    the authors' tap mask is not defined on its sub-pixel mesh).
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
        basis: str = "fourier",
        tail: str = "equivariant",
        learn_deformation: bool = False,
        mask: str = "disk",
        parametrisation: str = "log",
        layout: str = "residual",
        res_scale: float | None = None,
    ) -> None:
        g = layer_group(group)
        if tail not in TAILS:
            raise UsageError(f"unknown tail {tail!r}; choose one of {', '.join(TAILS)}")
        authors = check_layout(layout) == "authors"
        rs = default_res_scale(layout) if res_scale is None else res_scale
        k = kernel_size
        k_last = AUTHORS_LAST_KERNEL_SIZE if authors else k
        opt = dict(basis=basis, learn_deformation=learn_deformation, mask=mask, parametrisation=parametrisation)
        if tail == "equivariant":
            up_opt = {**opt, "mask": "disk"}
            upsampler = [GroupUpsample(width, s, g, UPSAMPLE_KERNEL_SIZE, **up_opt) for s in upsample_stages(scale)]
            last = ProjectConv(width, in_channels, g, k_last, **opt)
        else:
            channels = width * g.order
            upsampler = [PlainUpsample(channels, s) for s in upsample_stages(scale)]
            last = PlainConv(channels, in_channels, k_last)
        super().__init__(
            LiftConv(in_channels, width, g, k, **opt),
            [ResBlock(*(GroupConv(width, width, g, k, **opt) for _ in range(2)), rs) for _ in range(depth)],
            None if authors else GroupConv(width, width, g, k, **opt),  # the authors' edsr_bconv has no body conv
            upsampler,
            last,
            scale=scale,
            in_channels=in_channels,
            layout=layout,
        )
        self.group = g
        self.width = width
        self.basis = basis
        self.tail_layout = tail
        self.mask = mask
        self.parametrisation = parametrisation


# --- transformation-learned and sample-adaptive ------------------------------------------


class TransformHyperNet(nn.Module):
    """The bounded hypernetwork (``variant="bounded"``, this project's earlier design; not the authors').

    A few stride-2 convolutions, global average pooling and two linear layers; the last
    linear layer starts at zero, and the parametrisation maps zero to the identity:
    ``theta0 = (pi / N) tanh(z0)`` (an offset within one group step), ``log cx = L tanh(z1)``,
    ``log cy = L tanh(z2)`` with ``L = MAX_LOG_SCALE``.
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

    def offsets(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3)``: ``theta0`` (radians), ``log cx``, ``log cy`` (zero for a zero last layer)."""
        z = self.out(F.relu(self.hidden(self.features(x))))
        return torch.cat([self.max_angle * torch.tanh(z[:, :1]), MAX_LOG_SCALE * torch.tanh(z[:, 1:])], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3)``: ``theta0`` (radians), ``cx``, ``cy``."""
        o = self.offsets(x)
        return torch.cat([o[:, :1], torch.exp(o[:, 1:])], dim=1)


def _conv_out(size: int, stride: int) -> int:
    return (size - 3) // stride + 1


class AuthorsHyperNet(nn.Module):
    """The authors' SA-Conv hypernetwork (their ``HyperNet.py``, SR and denoising), rewritten here.

    Gray input (Rec. 601 weights :data:`GRAY_WEIGHTS` for RGB, the image itself for one channel) at the
    authors' range 0-255 (:data:`AUTHORS_RGB_RANGE`); five unpadded 3x3 convolutions (strides 1, 2, 2, 1, 1;
    ``first``, then ``features`` channels), each followed by BatchNorm and ReLU; the feature map ``F``
    ``(features, h, w)`` is pooled against the gray image averaged down to ``h x w`` (``x_down``):
    ``w1 = F x_down / (h w)`` ``(features,)``; a three-layer MLP (``features -> hidden -> hidden / 2 -> 3``,
    ReLU between) gives the offsets ``(dtheta0, dCx, dCy)``, unbounded, ADDED to every layer's own
    ``(theta0, Cx, Cy)`` (:func:`analysis.layers.authors_deformation_inverse`). The last linear layer (``out``)
    starts at zero, so SA starts as TL. Inputs smaller than :data:`AUTHORS_HYPER_MIN_SIZE` are edge-padded to it
    (the only departure; the authors train on 48-pixel or larger inputs, which it leaves alone).
    """

    def __init__(
        self,
        in_channels: int,
        features: int = AUTHORS_HYPER_FEATURES,
        first: int = AUTHORS_HYPER_FIRST,
        hidden: int = AUTHORS_HYPER_HIDDEN,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise UsageError(f"the authors' hypernetwork reads 1 or 3 channels, got {in_channels}")
        self.in_channels = in_channels
        self.register_buffer("gray_weights", torch.tensor(GRAY_WEIGHTS).view(1, 3, 1, 1), persistent=False)
        layers: list[nn.Module] = []
        self.strides = (1, 2, 2, 1, 1)
        c = 1
        for i, stride in enumerate(self.strides):
            out = first if i == 0 else features
            layers += [nn.Conv2d(c, out, 3, stride=stride), nn.BatchNorm2d(out), nn.ReLU()]
            c = out
        self.features = nn.Sequential(*layers)
        self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU())
        self.out = nn.Linear(hidden // 2, 3)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def gray(self, x: torch.Tensor) -> torch.Tensor:
        """The gray image at the authors' range, ``(B, 1, H, W)``, edge-padded to the minimum size if smaller."""
        g = x if self.in_channels == 1 else (x * self.gray_weights.to(x)).sum(1, keepdim=True)
        g = g * AUTHORS_RGB_RANGE
        h, w = g.shape[-2:]
        ph, pw = max(AUTHORS_HYPER_MIN_SIZE - h, 0), max(AUTHORS_HYPER_MIN_SIZE - w, 0)
        if ph or pw:
            g = F.pad(g, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")
        return g

    def offsets(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3)``: ``(dtheta0, dCx, dCy)``, added to every layer's ``(theta0, Cx, Cy)``."""
        g = self.gray(x)
        feat = self.features(g)
        h, w = feat.shape[-2:]
        down = F.adaptive_avg_pool2d(g, (h, w))
        pooled = torch.einsum("bnp,bp->bn", feat.flatten(2), down.flatten(1)) / (h * w)
        return self.out(self.mlp(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.offsets(x)


def transform_to_offset(transform: torch.Tensor) -> torch.Tensor:
    """``(theta0, cx, cy)`` -> ``(theta0, log cx, log cy)`` ``(..., 3)``; non-positive scales raise UsageError."""
    return transform_to_parameters(transform, "log")


def inverse_deformation(params: torch.Tensor) -> torch.Tensor:
    """``D_w^-1`` for ``D_w = R(theta0) diag(cx, cy)``: ``diag(1/cx, 1/cy) R(-theta0)``, ``(..., 2, 2)``."""
    return deformation_inverse(transform_to_offset(params))


def basis_layers(model: nn.Module) -> list[BasisConv]:
    """The basis-expanded convolutions of ``model`` in module order (those a deformation reaches)."""
    return [m for m in model.modules() if isinstance(m, BasisConv)]


class _TransformOverride:
    """``forward(x, transform=None)`` for networks whose layers take deformation offsets."""

    def forward(self, x: torch.Tensor, transform: torch.Tensor | None = None) -> torch.Tensor:
        """Restore ``x``; ``transform`` ``(B, 3)`` or ``(3,)``, ``(theta0, cx, cy)``, replaces the prediction.

        It is converted to an offset (its coordinates minus those of ``D = I``, :func:`transform_offset`) and
        added to every layer's own values (``tl``, ``sa``) or to the network's tied ``D`` (``tie_transform``), so
        with the deformations at their initialisation it is the deformation of every layer; for ``sa-global`` it
        is the deformation itself. The hypernetwork, if any, is then not evaluated and gets no gradient.
        """
        x = self._checked(x)
        if transform is None:
            return self._forward(x, self.deformation(x))
        transform = torch.as_tensor(transform, dtype=x.dtype, device=x.device).expand(x.shape[0], 3)
        return self._forward(x, self._with_tied(self.transform_offset(transform)))

    def transform_offset(self, transform: torch.Tensor) -> torch.Tensor:
        """The offset ``(..., 3)`` in this network's coordinates that deforms a layer at ``D = I`` by ``transform``."""
        identity = torch.tensor(IDENTITY_PARAMETERS[self.parametrisation], dtype=transform.dtype)
        return transform_to_parameters(transform, self.parametrisation) - identity.to(transform.device)

    def _with_tied(self, offset: torch.Tensor | None) -> torch.Tensor | None:
        """``offset`` plus the tied ``D``'s coordinates (absolute coordinates for the layers), if tied."""
        tied = getattr(self, "tied_deformation", None)
        if tied is None:
            return offset
        return tied if offset is None else tied + offset


class _Hypernetwork:
    """Adds ``hyper`` (:class:`TransformHyperNet`): the per-sample transform of ``sa-global``.

    Its output is the deformation itself; ``(0, 1, 1)`` means none.
    """

    def __init__(self, *, hyper_width: int = HYPER_WIDTH, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hyper = TransformHyperNet(self.in_channels, self.group.order, hyper_width)

    def predict_transform(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample ``(theta0, cx, cy)``, ``(B, 3)``."""
        return self.hyper(x)

    def predict_offsets(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample coordinates ``(theta0, log cx, log cy)``, ``(B, 3)``."""
        return self.hyper.offsets(x)

    def deformation(self, x: torch.Tensor) -> torch.Tensor:
        return self.hyper.offsets(x)


class TLNet(_TransformOverride, EquivariantNet):
    """Transformation-learned network (the authors' TL, theory.md section 3).

    :class:`EquivariantNet` whose every basis layer owns its deformation ``D = R(theta0) diag(cx, cy)``, at
    ``D = I`` initially: a global, per-layer deformation shared by all samples. ``variant`` (:data:`VARIANTS`):
    ``"authors"`` owns ``(theta0, Cx, Cy)`` of ``D^-1`` (offsets added directly, their ``GetBasis``) with the
    authors' tap mask; ``"bounded"`` owns ``(theta0, log cx, log cy)`` with the disk mask.

    ``tie_transform=True``: ONE deformation for all layers (``tied_deformation``, the layers own none). Only
    then is the network equivariant to ``D A D^-1`` (exactly on the grid where that is a signed permutation,
    :func:`conjugate_element`, measured by :func:`conjugate_equivariance_error`). With a ``D`` per layer (the
    authors' TL) it is equivariant to no conjugate group in general: see :func:`transform_spread`. The half turn
    commutes with every ``D``, so any ``tl`` stays exactly equivariant to ``rot180`` (when its group has it).
    """

    def __init__(self, *, variant: str = "authors", tie_transform: bool = False, **kwargs) -> None:
        if variant not in VARIANTS:
            raise UsageError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        parametrisation = "authors" if variant == "authors" else "log"
        mask = "authors" if variant == "authors" else "disk"
        super().__init__(learn_deformation=not tie_transform, mask=mask, parametrisation=parametrisation, **kwargs)
        self.variant = variant
        self.tie_transform = tie_transform
        with torch.no_grad():  # Backbone scaled the tail's parameters, its deformation too: back to D = I
            for layer in basis_layers(self):
                if layer.inv_scale is not None:
                    layer.inv_scale.fill_(1.0)
        tied = nn.Parameter(torch.tensor(IDENTITY_PARAMETERS[parametrisation])) if tie_transform else None
        self.register_parameter("tied_deformation", tied)

    def deformation(self, x: torch.Tensor) -> torch.Tensor | None:
        return self._with_tied(None)

    def layer_parameters(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """Every basis layer's deformation coordinates ``(N, L, 3)`` (``N = 1`` without per-sample offsets).

        Own values (or the tied ``D``) plus, for ``sa``, the hypernetwork's offsets for each image of ``x``.
        """
        params = self.own_parameters()
        offsets = self.sample_offsets(x)
        if offsets is None:
            return params[None]
        return params[None].to(offsets) + offsets[:, None, :]

    def own_parameters(self) -> torch.Tensor:
        """Every basis layer's own coordinates ``(L, 3)`` in module order (the tied ``D`` repeated), detached."""
        layers = basis_layers(self)
        if self.tied_deformation is not None:
            return self.tied_deformation.detach()[None].expand(len(layers), 3)
        return torch.stack([m.deformation_parameters().detach() for m in layers])

    def sample_offsets(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """Per-sample offsets ``(N, 3)`` for images ``x`` (``None`` for ``tl``)."""
        return None

    def layer_transforms(self) -> torch.Tensor:
        """Every basis layer's own ``(theta0, cx, cy)``, ``(L, 3)``, in module order (the tied ``D`` repeated)."""
        return parameters_to_transform(self.own_parameters(), self.parametrisation)


class SampleAdaptiveNet(TLNet):
    """SA-Conv (theory.md section 3): :class:`TLNet` plus a hypernetwork ``hyper`` predicting per-sample offsets.

    ``variant="authors"`` (default): :class:`AuthorsHyperNet` (their hypernetwork; ``hyper_width`` = its feature
    channels, default 32), offsets ``(dtheta0, dCx, dCy)`` unbounded and added to every layer's own
    ``(theta0, Cx, Cy)``, the authors' tap mask. ``variant="bounded"``: :class:`TransformHyperNet`, tanh-bounded
    offsets in ``(theta0, log cx, log cy)``, the disk mask. The remaining differences from the authors' code are
    listed in ``docs/models.md``. The hypernetwork's last layer starts at zero, so a fresh ``sa`` computes exactly
    what the ``tl`` with the same weights computes; :func:`init_sa_from_tl` loads a trained ``tl`` (same
    variant). Per-sample filters make each layer one grouped convolution over the batch. ``D`` depends on the
    input, so ``sa`` is equivariant to no fixed group once its hypernetwork has learned.
    """

    def __init__(self, *, hyper_width: int | None = None, variant: str = "authors", **kwargs) -> None:
        super().__init__(variant=variant, **kwargs)
        if variant == "authors":
            self.hyper = AuthorsHyperNet(self.in_channels, hyper_width or AUTHORS_HYPER_FEATURES)
        else:
            self.hyper = TransformHyperNet(self.in_channels, self.group.order, hyper_width or HYPER_WIDTH)

    def predict_offsets(self, x: torch.Tensor) -> torch.Tensor:
        """The hypernetwork's raw per-sample offsets ``(B, 3)`` in the layers' coordinates."""
        return self.hyper.offsets(x)

    def predict_transform(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample offsets as a transform ``(theta0, cx, cy)`` ``(B, 3)``: the deformation they give a layer at
        ``D = I``, so ``model(x, transform=model.predict_transform(x))`` equals ``model(x)``. (For the authors'
        variant ``cx = 1 / (1 + dCx)``: not positive when ``dCx <= -1``.)"""
        identity = torch.tensor(IDENTITY_PARAMETERS[self.parametrisation], dtype=x.dtype, device=x.device)
        return parameters_to_transform(identity + self.hyper.offsets(x), self.parametrisation)

    def deformation(self, x: torch.Tensor) -> torch.Tensor:
        return self._with_tied(self.hyper.offsets(x))

    def sample_offsets(self, x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None:
            raise UsageError("an sa model's deformation depends on the input: pass images")
        with torch.no_grad():
            return self.hyper.offsets(x.to(next(self.parameters())))


class GlobalSampleAdaptiveNet(_Hypernetwork, _TransformOverride, EquivariantNet):
    """``sa-global``: one per-sample ``D_w`` from the (bounded) hypernetwork shared by all layers (an earlier design).

    Same layers and state-dict keys as :class:`EquivariantNet` plus ``hyper.*``; the layers
    own no deformation, so the hypernetwork's transform is the deformation itself. With zero
    hypernetwork output it equals the equivariant network with the same weights.
    """

    def load_equivariant_state(self, state_dict: dict[str, torch.Tensor]) -> list[str]:
        """Start from an ``equivariant`` checkpoint; returns the hypernetwork keys left at their init.

        Raises :class:`UsageError` if any non-hypernetwork key is missing or unexpected.
        """
        return _load_except_hyper(self, state_dict, "equivariant")

    def layer_parameters(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """Every basis layer's coordinates ``(theta0, log cx, log cy)`` for each image of ``x``: ``(N, L, 3)``."""
        if x is None:
            raise UsageError("an sa-global model's deformation depends on the input: pass images")
        with torch.no_grad():
            offsets = self.hyper.offsets(x.to(next(self.parameters())))
        return offsets[:, None, :].expand(-1, len(basis_layers(self)), 3)


def _load_except_hyper(model: nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> list[str]:
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # shape mismatch: another width, depth, group order or basis
        first = str(err).strip().splitlines()[-1].strip()
        raise UsageError(f"not a {what} checkpoint for this architecture: {first}") from None
    bad_missing = [k for k in result.missing_keys if not k.startswith("hyper.")]
    if bad_missing or result.unexpected_keys:
        keys = bad_missing + list(result.unexpected_keys)
        hint = ""
        if any(k.endswith(("log_scale", "inv_scale")) for k in keys):
            hint = " (another variant: 'authors' layers own inv_scale, 'bounded' ones log_scale)"
        elif any(k == "tied_deformation" for k in keys):
            hint = " (tie_transform differs)"
        raise UsageError(
            f"not a {what} checkpoint for this architecture{hint}: missing {bad_missing[:4]}, "
            f"unexpected {list(result.unexpected_keys)[:4]}"
        )
    return list(result.missing_keys)


def init_sa_from_tl(
    model: SampleAdaptiveNet, state_dict: dict[str, torch.Tensor], *, kind: str, group: str, basis: str
) -> list[str]:
    """Initialise an ``sa`` model from a trained ``tl`` run's state dict (the authors' recipe).

    ``kind``, ``group``, ``basis`` are the source run's settings; another kind, group or basis
    is a one-line :class:`UsageError`, and every non-hypernetwork key must match in name and
    shape (strict; another variant or ``tie_transform`` has other keys). The hypernetwork keeps its zero last
    layer, so the result computes exactly what the ``tl`` network computes. Returns the hypernetwork keys left
    at their init.
    """
    if not isinstance(model, SampleAdaptiveNet):
        raise UsageError(f"--init-from initialises an 'sa' model, not {type(model).__name__}")
    if kind != "tl":
        raise UsageError(f"--init-from needs a 'tl' run, got a {kind!r} run")
    if layer_group(group).name != model.group.name:
        raise UsageError(f"--init-from run has group {group!r}, this model {model.group.name!r}; use the same group")
    if basis != model.basis:
        raise UsageError(f"--init-from run has basis {basis!r}, this model {model.basis!r}; use the same basis")
    return _load_except_hyper(model, state_dict, "tl")


SPREAD_QUANTITIES = ("theta0_deg", "log_cx", "log_cy")
"""The deformation coordinates :func:`transform_spread` reports (``D = R(theta0) diag(cx, cy)``)."""


def transform_spread(model: nn.Module, images: torch.Tensor | None = None) -> pd.DataFrame:
    """How far a deformable model is from ONE shared ``D``: the spread of its learned ``(theta0, cx, cy)``.

    For every basis layer (and, for ``sa``/``sa-global``, every image of ``images`` ``(N, C, H, W)``) the
    deformation ``D = R(theta0) diag(cx, cy)`` is read as ``theta0`` (degrees), ``log cx``, ``log cy``. One row
    per quantity of :data:`SPREAD_QUANTITIES`: ``mean``; ``sd_across_layers`` (population sd over layers,
    averaged over images) and ``range_across_layers``; ``sd_across_images`` (sd over images, averaged over
    layers; 0 for ``tl``) and ``range_across_images``; ``tied``, ``n_layers``, ``n_images``. A conjugate
    symmetry ``D A D^-1`` exists only when both spreads are 0 (and, for ``sa``, for a fixed ``transform=``).
    For the authors' variant a non-positive ``Cx`` (a reflection, no ``log cx``) reads NaN.
    """
    if not isinstance(model, (TLNet, GlobalSampleAdaptiveNet)):
        raise UsageError(f"only tl, sa and sa-global models carry a deformation D, not {type(model).__name__}")
    params = model.layer_parameters(images).double()  # (N, L, 3)
    transform = parameters_to_transform(params, model.parametrisation)
    with torch.no_grad():
        values = torch.stack(
            [torch.rad2deg(transform[..., 0]), transform[..., 1].log(), transform[..., 2].log()], dim=-1
        )
    n, layers = values.shape[:2]
    rows = []
    for q, name in enumerate(SPREAD_QUANTITIES):
        v = values[..., q]
        rows.append(
            {
                "quantity": name,
                "mean": float(v.mean()),
                "sd_across_layers": float(v.std(dim=1, unbiased=False).mean()),
                "range_across_layers": float((v.amax(1) - v.amin(1)).mean()),
                "sd_across_images": float(v.std(dim=0, unbiased=False).mean()) if n > 1 else 0.0,
                "range_across_images": float((v.amax(0) - v.amin(0)).mean()),
                "tied": bool(getattr(model, "tie_transform", False)),
                "n_layers": layers,
                "n_images": n if images is not None else 0,
            }
        )
    return pd.DataFrame(rows)


def shared_deformation(model: nn.Module, transform: torch.Tensor | None = None) -> torch.Tensor:
    """The one ``D`` ``(2, 2)`` every layer of ``model`` uses for every input, or a one-line :class:`UsageError`.

    ``transform`` ``(3,)``: a fixed ``(theta0, cx, cy)`` given to ``model(x, transform=...)`` (required for
    ``sa``/``sa-global``, whose hypernetwork makes ``D`` depend on the input). ``tl`` qualifies when tied, or
    when its layers' ``D`` happen to be equal exactly (e.g. at initialisation).
    """
    if not isinstance(model, (TLNet, GlobalSampleAdaptiveNet)):
        raise UsageError(f"only tl, sa and sa-global models carry a deformation D, not {type(model).__name__}")
    adaptive = isinstance(model, (SampleAdaptiveNet, GlobalSampleAdaptiveNet))
    if adaptive and transform is None:
        raise UsageError(
            "this model's D depends on the input (its hypernetwork): it is equivariant to no fixed group; "
            "pass a fixed transform= or use transform_spread"
        )
    if isinstance(model, GlobalSampleAdaptiveNet):
        params = model.transform_offset(torch.as_tensor(transform, dtype=torch.float64))[None]
    else:
        params = model.own_parameters().double()
        if transform is not None:
            params = params + model.transform_offset(torch.as_tensor(transform, dtype=torch.float64))
        spread = (params - params[0]).abs().max()
        if spread > 0:
            raise UsageError(
                f"the {len(params)} layers learned different D (max coordinate difference {float(spread):.3g}): "
                "no conjugate symmetry D A D^-1 to measure; use transform_spread, or build with tie_transform=True"
            )
    return torch.linalg.inv(parameters_inverse(params[0], model.parametrisation))


class _FixedTransform(nn.Module):
    """``model(x, transform=transform)`` (or ``model(x)``) as a one-argument module with the model's ``skip``."""

    def __init__(self, model: nn.Module, transform: torch.Tensor | None) -> None:
        super().__init__()
        self.model = model
        self.transform = transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform is None:
            return self.model(x)
        return self.model(x, transform=torch.as_tensor(self.transform, dtype=x.dtype, device=x.device))

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.skip(x)


def conjugate_equivariance_error(
    model: nn.Module,
    images: torch.Tensor,
    group: str | Group,
    *,
    transform: torch.Tensor | None = None,
    **options,
) -> pd.DataFrame:
    """Equivariance error of ``model`` to ``D A D^-1`` for every ``A`` of ``group``, where such a symmetry exists.

    ``D`` is :func:`shared_deformation` (a tied ``tl``, a ``tl`` whose layers agree, or any deformable model with
    a fixed ``transform``); other models raise :class:`UsageError`. For each ``A`` whose conjugate is grid-exact
    (:func:`conjugate_element`) the error is :func:`analysis.equivariance.equivariance_error` of that conjugate
    with ``normalisation="learned"`` (``options`` pass through, e.g. ``disk=False``); elements without a
    grid-exact conjugate get ``conjugate`` None and NaN. Columns: ``element``, ``conjugate``,
    ``equivariance_error``.
    """
    d = shared_deformation(model, transform)
    g = get_group(group) if isinstance(group, str) else group
    conjugates = {el.name: conjugate_element(d, el) for el in g}
    exact = [c for c in conjugates.values() if c is not None]
    found = {}
    if exact:
        unique = tuple({c.name: c for c in exact}.values())
        frame = equivariance_error(
            _FixedTransform(model, transform), images, Group("conjugates", unique), normalisation="learned", **options
        )
        found = dict(zip(frame["element"], frame["equivariance_error"], strict=True))
    rows = [
        {
            "element": name,
            "conjugate": None if c is None else c.name,
            "equivariance_error": math.nan if c is None else found[c.name],
        }
        for name, c in conjugates.items()
    ]
    return pd.DataFrame(rows)


def conjugate_element(deformation: torch.Tensor, element: GroupElement) -> GroupElement | None:
    """``D A D^-1`` as a grid-exact element (a signed permutation matrix), or ``None`` when it is not one.

    A network whose filters are ``phi(A^-1 D^-1 delta)`` for a fixed ``D`` (``tl`` with equal
    layers, or any deformable kind given ``transform=``) is exactly equivariant on the grid to
    ``D A D^-1`` whenever that matrix maps the tap grid onto itself: substituting
    ``delta = D A D^-1 delta'`` turns ``phi(B^-1 D^-1 delta)`` into ``phi((A^-1 B)^-1 D^-1 delta')``.
    Examples: ``A = rot180`` (``-I`` commutes with every ``D``); ``D`` a rotation or isotropic
    scale and ``A`` a rotation; ``D`` diagonal and ``A`` an axis flip; ``D = R(45 deg) diag(cx, cy)``
    and ``A = flip`` give the anti-diagonal reflection. Otherwise ``D A D^-1`` is not even
    orthogonal for ``cx != cy`` and holds only up to interpolation.
    """
    d = deformation.detach().to(torch.float64).cpu()
    m = d @ element.tensor(torch.float64) @ torch.linalg.inv(d)
    rounded = m.round()
    signed_permutation = bool((rounded.abs().sum(0) == 1).all() and (rounded.abs().sum(1) == 1).all())
    if (m - rounded).abs().max() > 1e-9 or not signed_permutation:
        return None
    for g in get_group("dih4"):
        if g.close_to(rounded.tolist()):
            return g
    return None


# --- group averaging (Lemma 4.1) ---------------------------------------------------------


class GroupAverage(nn.Module):
    """Geometric self-ensemble ``(1/|G|) sum_A pi_A f(pi_A^-1 x)`` (theory.md, Lemma 4.1).

    Exactly ``G``-equivariant for any image-to-image ``model`` when every element of ``group``
    is grid-exact (subgroups of ``dih4``: the action is a pixel permutation,
    :func:`symmetry.transforms.transform_image`); other groups raise :class:`UsageError`.
    Cost: ``|G|`` forward passes per call (:attr:`cost_factor`), e.g. 8 for ``dih4``.
    """

    def __init__(self, model: nn.Module, group: str | Group) -> None:
        super().__init__()
        try:
            g = get_group(group) if isinstance(group, str) else group
        except ValueError as err:
            raise UsageError(str(err)) from None
        inexact = [el.name for el in g if not el.is_grid_exact]
        if inexact:
            raise UsageError(
                f"GroupAverage needs a grid-exact group (a subgroup of dih4), {g.name} has {', '.join(inexact[:3])}"
            )
        self.model = model
        self.group = g
        self.cost_factor = g.order
        """Forward passes of ``model`` per call: ``|G|``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for el in self.group:
            y = self.model(transform_image(x, el.inverse())[0])
            y = transform_image(y, el)[0]
            total = y if total is None else total + y
        return total / self.group.order

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped model's :meth:`Backbone.skip` (equivariant itself, so the average leaves it unchanged)."""
        return self.model.skip(x)


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
    basis: str = "fourier",
    tail: str = "equivariant",
    layout: str = "residual",
) -> int:
    """Width of ``plain`` whose parameter count is closest to ``equivariant`` with the same settings."""
    target = count_parameters(
        EquivariantNet(
            group=group,
            scale=scale,
            in_channels=in_channels,
            width=width,
            depth=depth,
            kernel_size=kernel_size,
            basis=basis,
            tail=tail,
            layout=layout,
        )
    )

    def count(w: int) -> int:
        return plain_parameter_count(
            w, scale=scale, in_channels=in_channels, depth=depth, kernel_size=kernel_size, layout=layout
        )

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
    basis: str = "fourier",
    tail: str | None = None,
    layout: str = "residual",
    res_scale: float | None = None,
    **options,
) -> nn.Module:
    """Build a restoration network; ``(B, C, H, W) -> (B, C, H*scale, W*scale)``.

    ``kind`` in :data:`MODEL_KINDS` (the table :mod:`analysis.model_registry`, filled where each kind is
    defined); ``basis`` in :data:`analysis.basis.BASES` (equivariant kinds; for ``plain`` it only enters the
    parameter match); ``tail`` in :data:`TAILS` (default: ``equivariant`` for the residual layout, the authors'
    ``plain`` for theirs); ``layout`` in :data:`LAYOUTS` with ``res_scale`` (default :func:`default_res_scale`;
    kinds built on :class:`Backbone`'s own flavours only). Options of one kind: ``match`` in :data:`MATCHES` and
    ``plain_width`` (``plain``, which overrides the match), ``hyper_width`` (``sa``, ``sa-global``),
    ``variant`` in :data:`VARIANTS` and ``tie_transform`` (``tl``, ``sa``), ``mask`` in
    :data:`analysis.basis.MASKS` (``equivariant``, ``sa-global``; ``tl``/``sa`` take the mask of their variant).
    """
    check_layout(layout)
    if tail is None:
        tail = "plain" if layout == "authors" else "equivariant"
    builder = MODELS.get(kind)
    if basis not in BASES:
        raise UsageError(f"unknown basis {basis!r}; choose one of {', '.join(BASES)}")
    if tail not in TAILS:
        raise UsageError(f"unknown tail {tail!r}; choose one of {', '.join(TAILS)}")
    allowed = MODELS.options(kind)
    extra = sorted(set(options) - allowed) if allowed is not None else []
    if extra:
        takers = [k for k in MODELS if extra[0] in (MODELS.options(k) or ())]
        only = f"; {extra[0]}= applies to the {' and '.join(takers)} model only" if takers else ""
        raise UsageError(f"build_model({kind!r}) got unexpected options: {', '.join(extra)}{only}")
    shared = dict(group=group, scale=scale, in_channels=in_channels, width=width, depth=depth, kernel_size=kernel_size)
    if layout != "residual" or res_scale is not None:  # only then: kinds with their own backbone need not know them
        if kind not in LAYOUT_KINDS:
            raise UsageError(f"layout= and res_scale= apply to {', '.join(LAYOUT_KINDS)}, not {kind!r}")
        shared.update(layout=layout, res_scale=res_scale)
    return builder(dict(shared, basis=basis, tail=tail), **options)


@register_model("plain")
def _plain(shared: dict, *, match: str = "parameters", plain_width: int | None = None) -> PlainNet:
    """Ordinary convolutions: ``plain_width`` channels, else matched to ``equivariant`` by ``match``."""
    if match not in MATCHES:
        raise UsageError(f"unknown match {match!r}; choose one of {', '.join(MATCHES)}")
    group, width, basis, tail = (shared.pop(k) for k in ("group", "width", "basis", "tail"))
    if not plain_width:
        if match == "channels":
            plain_width = width * layer_group(group).order
        else:
            same = {k: v for k, v in shared.items() if k != "res_scale"}
            plain_width = matched_plain_width(group, width, basis=basis, tail=tail, **same)
    return PlainNet(width=plain_width, **shared)


def _checked(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise UsageError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
    return value


@register_model("equivariant")
def _equivariant(shared: dict, *, mask: str = "disk") -> EquivariantNet:
    return EquivariantNet(mask=_checked("mask", mask, MASKS), **shared)


@register_model("tl")
def _tl(shared: dict, *, variant: str = "authors", tie_transform: bool = False) -> TLNet:
    return TLNet(variant=_checked("variant", variant, VARIANTS), tie_transform=bool(tie_transform), **shared)


@register_model("sa")
def _sa(
    shared: dict, *, hyper_width: int | None = None, variant: str = "authors", tie_transform: bool = False
) -> SampleAdaptiveNet:
    variant = _checked("variant", variant, VARIANTS)
    return SampleAdaptiveNet(hyper_width=hyper_width, variant=variant, tie_transform=bool(tie_transform), **shared)


@register_model("sa-global")
def _sa_global(shared: dict, *, hyper_width: int = HYPER_WIDTH, mask: str = "disk") -> GlobalSampleAdaptiveNet:
    return GlobalSampleAdaptiveNet(hyper_width=hyper_width, mask=_checked("mask", mask, MASKS), **shared)
