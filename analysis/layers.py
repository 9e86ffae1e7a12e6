"""Group-equivariant convolution layers with basis-expanded filters (theory.md, section 3).

Features carry the *regular representation* of a finite group ``G`` of :mod:`symmetry.groups`
(``rotN``, ``dihN``, ``flip``, ``flipud``): a feature with ``width`` fields has
``width * |G|`` tensor channels, ordered ``channel = w * |G| + g`` (field ``w``, group
element ``g`` in the group's element order). Under ``T`` in ``G`` acting on the input,
``f'_{w, g}(p) = f_{w, T^-1 g}(T^-1 p)``: each field is spatially transformed and permuted
along the group axis (a cyclic shift for ``rotN``; the dihedral Cayley table for ``dihN``).

Every filter is a linear combination of a fixed smooth basis ``phi`` (see
:mod:`analysis.basis`) evaluated on the rotated mesh ``A^-1 delta_ij`` -- or, for the
sample-adaptive network, on ``A^-1 D_w^-1 delta_ij`` with a per-sample deformation
``D_w`` (theory.md, section 3). The basis on the rotated meshes is a buffer built at
construction (and rebuilt in float64 precision after a dtype/device change); filters
are ``einsum(weights, basis)``.

- :class:`LiftConv`: image channels -> regular features, one filter per rotation.
- :class:`GroupConv`: regular -> regular; output channel ``B`` sums over ``A`` of filter
  ``(B, B^-1 A)`` applied to input channel ``A`` (rotated filter + cyclic shift).
- :class:`ProjectConv`: regular -> image channels, summing over the group.
- :class:`GroupUpsample`: regular -> regular at ``scale`` times the resolution, a
  sub-pixel convolution plus pixel shuffle whose sub-pixel arrangement rotates with the
  filter, so the upsampler is equivariant too.

Deformations (theory.md, section 3): ``D = R(theta0) diag(cx, cy)``; the filter for ``A`` is
``phi(A^-1 D^-1 delta)``. Two parametrisations (:data:`PARAMETRISATIONS`):

- ``"authors"`` (their ``GetBasis``): the coordinates ``(theta0, Cx, Cy)`` of ``D^-1 = diag(Cx, Cy) R(-theta0)``,
  i.e. ``cx = 1 / Cx``, ``cy = 1 / Cy``; the mesh is rotated by ``theta0``, its axes scaled by ``Cx, Cy``, then
  rotated by the group element. Offsets are added to ``(theta0, Cx, Cy)`` directly and are unbounded.
- ``"log"`` (this project's earlier, "bounded" design): the coordinates ``(theta0, log cx, log cy)``.

A layer built with ``learn_deformation=True`` (the TL network) owns ``theta0`` and ``log_scale`` (``"log"``)
or ``theta0`` and ``inv_scale`` = ``(Cx, Cy)`` (``"authors"``), at the identity ``D = I``;
``forward(x, offset)`` takes optional offsets ``(B, 3)`` (per sample) or ``(3,)`` (shared) in the layer's
coordinates, ADDED to the layer's own values (the SA rule), or used as the deformation itself by a layer
without its own (a network-level, tied ``D``).

With no deformation the layers are exactly equivariant on the grid to the grid-exact
elements of ``G`` (quarter turns, axis and diagonal flips: the rotated or reflected basis
is an exact permutation of taps), and approximately to the others (e.g. the 45-degree
rotations of ``rot8``). With a deformation ``D`` they are equivariant to ``D A D^-1``
instead, but only when every layer has the same ``D`` (exactly on the grid where that matrix is grid-exact,
see :func:`analysis.models.conjugate_element`); with a different ``D`` per layer (the authors' TL) or per
sample (SA) no such symmetry holds. Biases are one number per field, shared across the group axis.

In eval mode filters are built once and cached (computed without autograd, like
e2cnn): gradients still flow to the input, not to the weights. The cache is dropped
on :meth:`train` and whenever a weight is modified in place or replaced.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from analysis.basis import MASKS, authors_tap_mask, kernel_grid, make_basis, subpixel_grid
from symmetry.errors import UsageError
from symmetry.groups import Group, UnknownGroupError, get_group
from symmetry.transforms import inverse_deformation_matrix

INIT_GAIN = 1.0 / 3.0
"""Variance gain of the weight initialisation, var(filter tap) ~ INIT_GAIN / fan_in: the same
as PyTorch's default ``nn.Conv2d`` init, so ``plain`` and ``equivariant`` start alike."""


LAYER_GROUPS_HELP = "rotN, dihN, flip or flipud (e.g. rot8, dih4)"
PARAMETRISATIONS = ("authors", "log")
"""Coordinates of a layer's deformation: the authors' ``(theta0, Cx, Cy)`` of ``D^-1``, or ``(theta0, log cx,
log cy)`` of ``D`` (module docstring)."""
IDENTITY_PARAMETERS = {"authors": (0.0, 1.0, 1.0), "log": (0.0, 0.0, 0.0)}
"""The coordinates of ``D = I`` in each parametrisation."""


def layer_group(group: str | Group) -> Group:
    """The finite group named by ``group`` (rotN, dihN, flip, flipud); unknown names raise :class:`UsageError`."""
    if isinstance(group, Group):
        return group
    if re.fullmatch(r"\s*so2(:\d+)?\s*", group.lower()):
        raise UsageError(f"equivariant layers need a named finite group ({LAYER_GROUPS_HELP}), got {group!r}")
    try:
        return get_group(group)
    except UnknownGroupError as err:
        raise UsageError(f"{err}; equivariant layers take {LAYER_GROUPS_HELP}") from None


def relative_index(group: Group) -> torch.Tensor:
    """Cayley table ``T[b, a]`` = index of ``B^-1 A`` in ``group`` (found from the matrices, orthogonal)."""
    mats = group.matrices(torch.float64)
    prod = torch.einsum("bji,ajk->baik", mats, mats)  # B^T A = B^-1 A
    dist = (prod[:, :, None] - mats[None, None]).abs().flatten(-2).amax(-1)  # (B, A, C)
    index = dist.argmin(-1)
    if not bool((dist.amin(-1) < 1e-9).all()):
        raise UsageError(f"{group.name} is not closed under composition")
    return index


def deformation_inverse(params: torch.Tensor) -> torch.Tensor:
    """``D^-1`` for ``params`` = ``(theta0, log cx, log cy)`` ``(..., 3)``, ``D = R(theta0) diag(cx, cy)``.

    :func:`symmetry.transforms.inverse_deformation_matrix` of ``(theta0, exp(log cx), exp(log cy))``; differentiable.
    """
    theta0, log_cx, log_cy = params.unbind(-1)
    return inverse_deformation_matrix(
        theta0, torch.exp(log_cx), torch.exp(log_cy), dtype=params.dtype, device=params.device
    )


def authors_deformation_inverse(params: torch.Tensor) -> torch.Tensor:
    """``D^-1 = diag(Cx, Cy) R(-theta0)`` for the authors' ``params`` = ``(theta0, Cx, Cy)`` ``(..., 3)``.

    In the authors' image coordinates (``y`` down) their ``GetBasis`` samples the weight grid at
    ``R(theta_A) diag(Cx, Cy) R(theta0) delta``; in ours (``y`` up) every rotation changes sense, which gives
    ``A^-1 diag(Cx, Cy) R(-theta0) delta`` with ``A = R(theta_A)``: ``cx = 1 / Cx``, ``cy = 1 / Cy``, the same
    ``theta0``. ``Cx <= 0`` is allowed (the authors do not bound it): a reflection or a collapsed mesh.
    """
    theta0, big_cx, big_cy = params.unbind(-1)
    c, s = torch.cos(theta0), torch.sin(theta0)
    return torch.stack([torch.stack([c * big_cx, s * big_cx], -1), torch.stack([-s * big_cy, c * big_cy], -1)], -2)


def parameters_inverse(params: torch.Tensor, parametrisation: str) -> torch.Tensor:
    """``D^-1`` ``(..., 2, 2)`` of deformation coordinates ``params`` ``(..., 3)`` in ``parametrisation``."""
    if parametrisation == "authors":
        return authors_deformation_inverse(params)
    return deformation_inverse(params)


def parameters_to_transform(params: torch.Tensor, parametrisation: str) -> torch.Tensor:
    """``(theta0, cx, cy)`` of ``D = R(theta0) diag(cx, cy)`` from coordinates ``params`` ``(..., 3)``."""
    if parametrisation == "authors":
        return torch.cat([params[..., :1], 1.0 / params[..., 1:]], dim=-1)
    return torch.cat([params[..., :1], params[..., 1:].exp()], dim=-1)


def transform_to_parameters(transform: torch.Tensor, parametrisation: str) -> torch.Tensor:
    """Coordinates in ``parametrisation`` of ``(theta0, cx, cy)`` ``(..., 3)``; non-positive scales raise UsageError."""
    if not bool((transform[..., 1:] > 0).all()):
        raise UsageError("deformation scales cx, cy must be positive")
    if parametrisation == "authors":
        return torch.cat([transform[..., :1], 1.0 / transform[..., 1:]], dim=-1)
    return torch.cat([transform[..., :1], torch.log(transform[..., 1:])], dim=-1)


def rotation_count(group: Group) -> int:
    """Number of rotations (determinant +1) in ``group``: 8 for rot8 and dih8, 4 for rot4 and dih4."""
    return int((torch.linalg.det(group.matrices(torch.float64)) > 0).sum())


def deformed_points(points: torch.Tensor, inv_mats: torch.Tensor, deform_inv: torch.Tensor | None) -> torch.Tensor:
    """Mesh points ``A^-1 D^-1 delta``: ``(G, P, 2)``; ``(..., G, P, 2)`` for ``deform_inv`` ``(..., 2, 2)``.

    Shapes: ``points`` ``(P, 2)``, ``inv_mats`` ``(G, 2, 2)`` (the matrices ``A^-1``); a
    ``(2, 2)`` ``deform_inv`` is one deformation for all samples, ``(B, 2, 2)`` one per sample.
    """
    if deform_inv is None:
        return torch.einsum("gij,pj->gpi", inv_mats, points)
    mats = torch.einsum("gij,...jk->...gik", inv_mats.to(deform_inv), deform_inv)
    return torch.einsum("...gij,pj->...gpi", mats, points.to(deform_inv))


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int) -> torch.Tensor:
    """``F.conv2d`` with shared ``(O, I, k, k)`` filters or per-sample ``(B, O, I, k, k)`` filters.

    Per-sample filters are applied as ONE grouped convolution with the batch folded into
    the groups (theory.md, section 3): input ``(1, B*I, H, W)``, ``groups=B``.
    """
    if weight.dim() == 4:
        return F.conv2d(x, weight, bias, padding=padding)
    b, o, i, kh, kw = weight.shape
    if x.shape[0] != b:
        raise ValueError(f"per-sample filters for {b} samples, got a batch of {x.shape[0]}")
    h, w = x.shape[-2:]
    y = F.conv2d(x.reshape(1, b * i, h, w), weight.reshape(b * o, i, kh, kw), bias.repeat(b), padding=padding, groups=b)
    return y.reshape(b, o, *y.shape[-2:])


class BasisConv(nn.Module):
    """Base class: a convolution whose filters are ``einsum(weight, phi(A^-1 D^-1 delta))``.

    Buffers (not saved in the state dict; rebuilt from the group and kernel size):
    ``points`` ``(P, 2)`` the unrotated mesh, ``inv_mats`` ``(G, 2, 2)`` the matrices
    ``A^-1``, and ``basis`` ``(G, P, n_basis)`` the basis on every transformed mesh.
    ``basis_name`` is ``"fourier"`` (a Fourier series, not F-Conv's PCA basis) or ``"bicubic"`` (B-Conv), see
    :mod:`analysis.basis`; ``mask`` is ``"disk"`` (at the deformed points) or ``"authors"`` (the buffer
    ``tap_mask`` ``(P,)``, :func:`analysis.basis.authors_tap_mask`, on the undeformed taps; ``scale == 1`` only).
    With ``learn_deformation`` the layer owns its deformation (the TL network) in ``parametrisation``
    (:data:`PARAMETRISATIONS`): ``theta0`` and ``inv_scale`` = ``(Cx, Cy)`` at ``(0, 1, 1)`` (``"authors"``), or
    ``theta0`` and ``log_scale`` at ``(0, 0, 0)`` (``"log"``). Subclasses define ``weight`` and :meth:`expand`.
    """

    def __init__(
        self,
        group: str | Group,
        kernel_size: int,
        *,
        scale: int = 1,
        band: float | None = None,
        basis: str = "fourier",
        learn_deformation: bool = False,
        mask: str = "disk",
        parametrisation: str = "log",
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise UsageError(f"kernel_size must be odd (symmetric padding), got {kernel_size}")
        if mask not in MASKS:
            raise UsageError(f"unknown mask {mask!r}; choose one of {', '.join(MASKS)}")
        if parametrisation not in PARAMETRISATIONS:
            choices = ", ".join(PARAMETRISATIONS)
            raise UsageError(f"unknown parametrisation {parametrisation!r}; choose one of {choices}")
        if mask == "authors" and scale != 1:
            raise UsageError("the authors' tap mask is defined on a kernel's taps, not on a sub-pixel mesh")
        self.group = layer_group(group)
        self.order = self.group.order
        self.kernel_size = kernel_size
        self.scale = scale
        self.padding = kernel_size // 2
        points = self._mesh(torch.float64)
        self.basis_name = basis
        self.mask = mask
        self.parametrisation = parametrisation
        self.phi = make_basis(basis, kernel_size, band=band, disk=mask == "disk")
        self.phi.set_normalisation(points)
        self.n_basis = self.phi.size
        self.theta0 = self.log_scale = self.inv_scale = None
        if learn_deformation:
            self.theta0 = nn.Parameter(torch.zeros(()))
            if parametrisation == "authors":
                self.inv_scale = nn.Parameter(torch.ones(2))
            else:
                self.log_scale = nn.Parameter(torch.zeros(2))
        tap_mask = authors_tap_mask(kernel_size, rotation_count(self.group)) if mask == "authors" else None
        self.register_buffer("tap_mask", None if tap_mask is None else tap_mask.float(), persistent=False)
        self._tap_mask64 = tap_mask
        self.register_buffer("rel", relative_index(self.group), persistent=False)
        self.register_buffer("points", points.float(), persistent=False)
        self.register_buffer("inv_mats", torch.zeros(self.order, 2, 2), persistent=False)
        self.register_buffer("basis", torch.zeros(self.order, points.shape[0], self.n_basis), persistent=False)
        self._rebuild_basis()
        self._cache: tuple[tuple, torch.Tensor] | None = None

    # --- mesh and basis -------------------------------------------------------------
    def _mesh(self, dtype: torch.dtype, device=None) -> torch.Tensor:
        """The unrotated evaluation mesh ``delta`` in input-pixel units, ``(P, 2)``."""
        if self.scale == 1:
            return kernel_grid(self.kernel_size, dtype, device)
        return subpixel_grid(self.kernel_size, self.scale, dtype, device).reshape(-1, 2) / self.scale

    @torch.no_grad()
    def _rebuild_basis(self) -> None:
        """Recompute the buffers in float64, then cast to the current buffer dtype/device."""
        dtype, device = self.basis.dtype, self.basis.device
        points = self._mesh(torch.float64, device)
        inv = self.group.matrices(torch.float64, device).transpose(-1, -2)  # orthogonal: A^-1 = A^T
        basis = self._masked(self.phi(deformed_points(points, inv, None)), self._tap_mask64)
        if self._tap_mask64 is not None:
            self.tap_mask = self._tap_mask64.to(dtype=dtype, device=device)
        self.points = points.to(dtype)
        self.inv_mats = inv.to(dtype)
        self.basis = basis.to(dtype)
        self._cache = None

    def _apply(self, fn, recurse: bool = True):
        out = super()._apply(fn, recurse)
        if hasattr(self, "phi"):
            self._rebuild_basis()  # keep float64-accurate rotated bases after .double()/.to(device)
        return out

    @staticmethod
    def _masked(basis: torch.Tensor, tap_mask: torch.Tensor | None) -> torch.Tensor:
        """``basis`` ``(..., P, n)`` times the tap mask ``(P,)`` (the authors' mask), or unchanged without one."""
        return basis if tap_mask is None else basis * tap_mask.to(basis)[:, None]

    def evaluate_basis(self, deform_inv: torch.Tensor | None = None) -> torch.Tensor:
        """``phi(A^-1 D^-1 delta)``: the buffer, ``(G, P, n)`` for one ``(2, 2)`` ``D^-1``, or ``(B, G, P, n)``.

        With ``mask="authors"`` every tap's row is multiplied by its :attr:`tap_mask` weight.
        """
        if deform_inv is None:
            return self.basis
        points = deformed_points(self.points, self.inv_mats, deform_inv.to(self.basis.dtype))
        return self._masked(self.phi(points), self.tap_mask)

    def deformation_parameters(self) -> torch.Tensor | None:
        """The layer's own coordinates ``(3,)`` in its parametrisation, or ``None`` without ``learn_deformation``.

        ``(theta0, Cx, Cy)`` (``"authors"``) or ``(theta0, log cx, log cy)`` (``"log"``).
        """
        if self.theta0 is None:
            return None
        return torch.cat([self.theta0[None], self.inv_scale if self.log_scale is None else self.log_scale])

    def deformation_inverse(self, offset: torch.Tensor | None = None) -> torch.Tensor | None:
        """``D^-1`` of own coordinates plus ``offset`` ``(B, 3)`` or ``(3,)``: ``None``, ``(2, 2)`` or ``(B, 2, 2)``."""
        own = self.deformation_parameters()
        if own is None and offset is None:
            return None
        params = own if offset is None else (offset if own is None else own.to(offset) + offset)
        return parameters_inverse(params.to(self.basis.dtype), self.parametrisation)

    # --- filters --------------------------------------------------------------------
    def expand(self, basis: torch.Tensor) -> torch.Tensor:
        """Filters ``(..., O, I, k, k)`` from the basis ``(..., G, P, n)``; defined by subclasses."""
        raise NotImplementedError

    def conv_bias(self) -> torch.Tensor:
        """Bias of the underlying convolution (one per tensor channel, shared across the group)."""
        raise NotImplementedError

    def _cache_key(self) -> tuple:
        params = tuple(self.parameters(recurse=False))
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params) + (self.basis.data_ptr(),)

    def filters(self, offset: torch.Tensor | None = None) -> torch.Tensor:
        """The convolution weight ``(O, I, k, k)``, or ``(B, O, I, k, k)`` with per-sample ``offset`` ``(B, 3)``.

        Cached in eval mode when there is no per-sample offset (the key covers the layer's own deformation).
        """
        if offset is not None:
            return self.expand(self.evaluate_basis(self.deformation_inverse(offset)))
        if self.training:
            self._cache = None
            return self.expand(self.evaluate_basis(self.deformation_inverse()))
        key = self._cache_key()
        if self._cache is None or self._cache[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # a normal tensor, reusable outside inference mode
                self._cache = (key, self.expand(self.evaluate_basis(self.deformation_inverse())))
        return self._cache[1]

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        return _conv(x, self.filters(offset), self.conv_bias(), self.padding)

    def _init_weight(self, weight: nn.Parameter, fan_in_channels: int) -> None:
        std = math.sqrt(INIT_GAIN / (fan_in_channels * self.n_basis))
        nn.init.normal_(weight, 0.0, std)

    def extra_repr(self) -> str:
        tl = f", learn_deformation=True, parametrisation={self.parametrisation}" if self.theta0 is not None else ""
        return (
            f"group={self.group.name}, kernel_size={self.kernel_size}, basis={self.basis_name}, "
            f"mask={self.mask}, n_basis={self.n_basis}{tl}"
        )


class LiftConv(BasisConv):
    """Lifting layer: ``in_channels`` image channels -> ``out_fields`` regular fields (one filter per element).

    ``options`` (here and in the other layers): ``basis``, ``learn_deformation``, ``mask``, ``parametrisation``
    of :class:`BasisConv`.
    """

    def __init__(self, in_channels: int, out_fields: int, group: str | Group, kernel_size: int, **options) -> None:
        super().__init__(group, kernel_size, **options)
        self.in_channels, self.out_fields = in_channels, out_fields
        self.weight = nn.Parameter(torch.empty(out_fields, in_channels, self.n_basis))
        self.bias = nn.Parameter(torch.zeros(out_fields))
        self._init_weight(self.weight, in_channels)

    def expand(self, basis: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        w = torch.einsum("ocn,...gpn->...ogcp", self.weight, basis)
        return w.reshape(*w.shape[:-4], self.out_fields * self.order, self.in_channels, k, k)

    def conv_bias(self) -> torch.Tensor:
        return self.bias.repeat_interleave(self.order)


class GroupConv(BasisConv):
    """Group layer: regular -> regular.

    Output ``(o, B)`` sums over ``(i, A)`` of filter ``(o, i, B^-1 A)`` evaluated on the
    mesh ``B^-1 delta``: a spatially transformed filter, permuted along the group axis by the
    Cayley table (a cyclic shift for ``rotN``).
    """

    def __init__(self, in_fields: int, out_fields: int, group: str | Group, kernel_size: int, **options) -> None:
        super().__init__(group, kernel_size, **options)
        self.in_fields, self.out_fields = in_fields, out_fields
        self.weight = nn.Parameter(torch.empty(out_fields, in_fields, self.order, self.n_basis))
        self.bias = nn.Parameter(torch.zeros(out_fields))
        self._init_weight(self.weight, in_fields * self.order)

    def expand(self, basis: torch.Tensor) -> torch.Tensor:
        k, g = self.kernel_size, self.order
        shifted = self.weight[:, :, self.rel]  # (O, I, G_B, G_A, n): filter (B, B^-1 A)
        w = torch.einsum("oiban,...bpn->...obiap", shifted, basis)
        return w.reshape(*w.shape[:-5], self.out_fields * g, self.in_fields * g, k, k)

    def conv_bias(self) -> torch.Tensor:
        return self.bias.repeat_interleave(self.order)


class ProjectConv(BasisConv):
    """Output layer: regular -> ``out_channels`` image channels, summing filter ``phi(A^-1 delta)`` over ``A``."""

    def __init__(self, in_fields: int, out_channels: int, group: str | Group, kernel_size: int, **options) -> None:
        super().__init__(group, kernel_size, **options)
        self.in_fields, self.out_channels = in_fields, out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_fields, self.n_basis))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self._init_weight(self.weight, in_fields * self.order)

    def expand(self, basis: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        w = torch.einsum("cin,...apn->...ciap", self.weight, basis)
        return w.reshape(*w.shape[:-4], self.out_channels, self.in_fields * self.order, k, k)

    def conv_bias(self) -> torch.Tensor:
        return self.bias


UPSAMPLE_BAND = 1.5
"""Frequency band of the upsampler's basis (in cycles per kernel period); 9 functions for a 3x3 kernel."""


class GroupUpsample(BasisConv):
    """Equivariant sub-pixel upsampler: regular -> regular at ``scale`` x resolution.

    A ``kernel_size`` convolution to ``fields * N * scale**2`` channels followed by
    ``PixelShuffle(scale)`` computes ``out(y) = sum_x K(y - scale x) f(x)``. The
    continuous filter ``K`` is expanded in the basis and evaluated at the sub-pixel
    offsets ``(y - scale x) / scale`` rotated by ``B^-1`` (see
    :func:`analysis.basis.subpixel_grid`), so the sub-pixel arrangement rotates with the
    filter and the output is an equivariant regular feature at the fine resolution.
    """

    def __init__(self, fields: int, scale: int, group: str | Group, kernel_size: int, **options) -> None:
        if scale < 2:
            raise UsageError(f"upsampling scale must be >= 2, got {scale}")
        super().__init__(group, kernel_size, scale=scale, band=UPSAMPLE_BAND, **options)
        self.fields = fields
        self.weight = nn.Parameter(torch.empty(fields, fields, self.order, self.n_basis))
        self.bias = nn.Parameter(torch.zeros(fields))
        self._init_weight(self.weight, fields * self.order)

    def expand(self, basis: torch.Tensor) -> torch.Tensor:
        k, g, s = self.kernel_size, self.order, self.scale
        basis = basis.reshape(*basis.shape[:-2], s * s, k * k, self.n_basis)  # (..., G, sub-pixel, tap, n)
        shifted = self.weight[:, :, self.rel]
        w = torch.einsum("oiban,...bsqn->...obsiaq", shifted, basis)
        return w.reshape(*w.shape[:-6], self.fields * g * s * s, self.fields * g, k, k)

    def conv_bias(self) -> torch.Tensor:
        return self.bias.repeat_interleave(self.order * self.scale * self.scale)

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        return F.pixel_shuffle(super().forward(x, offset), self.scale)
