"""Memory budget of ``python -m analysis.train`` (the budget idea and its check: :mod:`symmetry.budget`).

:func:`train_budget` estimates a training run's memory from its resolved config before anything is built for
real: the network is built with its parameters on the ``meta`` device (shapes only, no memory, initialisers
skipped) at depth 0 and 1, and the parameter count and the layers are extended to the full depth (every residual
block is the same). From the layers' channels and the patch size it adds (float32):

- parameters, their gradients and Adam's two moments: ``16 P`` bytes (P parameters);
- what autograd keeps for the backward pass of one batch: every convolution's input ``(B, C_in, S, S)`` at its
  resolution ``S`` (a ReLU's output is the next convolution's input; residual sums keep nothing), the loss's
  output and target, and for the basis layers of the equivariant kinds their expanded filters
  ``(C_out, C_in, k, k)`` and the Cayley-shifted weights ``|G|`` times the layer's parameters (one set of
  filters per sample for ``sa`` and ``sa-global``); times ``|G|`` with ``--average``;
- the backward pass's transients: three activations of the widest layer, the largest filter's gradient and the
  largest convolution's unfolded input ``(B, C_in k^2, S^2)``;
- validation (evaluation mode, one image of ``--val-crop``, 256 px when uncropped): the filters every basis
  layer caches, and three activations of the widest layer;
- with ``--resume``: the checkpoint read back (the model and Adam's moments, ``12 P`` bytes).

The ``e2cnn`` kind (whose layers cannot be built on the meta device) is estimated as the ``equivariant`` kind of
the same group, width and depth (the same layout of regular fields). Checked against measured peaks in
docs/limits.md.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from analysis.layers import BasisConv, GroupConv, GroupUpsample, LiftConv, ProjectConv, layer_group
from analysis.models import plain_parameter_count, upsample_stages
from analysis.registry import network_from_config
from symmetry.budget import Budget, check, local_processes, parse_memory
from symmetry.runtime import resolve_device

FLOAT32 = 4
UNCROPPED_SIDE = 256  # validation side assumed when --val-crop 0 (whole images; their size is not known here)


@dataclass(frozen=True)
class Layer:
    """One convolution of the network: channels in and out (before a pixel shuffle), kernel, input side relative
    to the network's input, and for basis layers the elements of its Cayley-shifted weight."""

    c_in: int
    c_out: int
    kernel: int
    side: float
    basis: bool = False
    shifted: int = 0


class _SkipInit(TorchFunctionMode):
    """In-place operations on meta tensors (initialisers, ``mul_``) return them unchanged: shapes are all that count,
    and torch's meta versions of the random initialisers import its compiler (seconds)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        target = args[0] if args else kwargs.get("tensor")
        if (
            name.endswith("_")
            and not name.startswith("_")
            and name not in ("resize_", "set_")
            and isinstance(target, torch.Tensor)
            and target.is_meta
        ):
            return target
        return func(*args, **kwargs)


@contextlib.contextmanager
def _meta_parameters():
    """Every parameter registered while this runs lives on the meta device (the buffers stay real)."""
    register = nn.Module.register_parameter

    def on_meta(self, name, param):
        if param is not None and not param.is_meta:
            param = nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=param.requires_grad)
        register(self, name, param)

    nn.Module.register_parameter = on_meta
    try:
        with _SkipInit():
            yield
    finally:
        nn.Module.register_parameter = register


def _build(cfg, depth: int, **options) -> nn.Module:

    with _meta_parameters():
        return network_from_config(cfg.replace(depth=depth, model_options={**dict(cfg.model_options or {}), **options}))


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _plain_width(cfg) -> int:
    """``plain``'s width, matched as :func:`analysis.models.matched_plain_width` matches it, from the equivariant
    network's parameter count extended to the full depth (building it at depth 256 takes seconds)."""

    options = dict(cfg.model_options or {})
    if options.get("plain_width"):
        return int(options["plain_width"])
    if options.get("match", "parameters") == "channels":
        return cfg.width * layer_group(cfg.group).order
    eq = cfg.replace(model="equivariant", average=None, model_options={})
    eq = eq.replace(model_options={k: v for k, v in options.items() if k in ("basis", "tail")})
    p0, p1 = _count(_build(eq, 0)), _count(_build(eq, 1))
    target = p0 + cfg.depth * (p1 - p0)
    channels = 3 if cfg.channels == "rgb" else 1

    def count(w: int) -> int:
        return plain_parameter_count(
            w, scale=cfg.scale or 1, in_channels=channels, depth=cfg.depth, kernel_size=cfg.kernel_size
        )

    lo, hi = 1, 2
    while count(hi) <= target:  # the count grows with the width: bracket, then bisect
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= target else (lo, mid)
    return lo if abs(count(lo) - target) <= abs(count(hi) - target) else hi


def _layer(module: nn.Module, side: float) -> Layer | None:

    if isinstance(module, nn.Conv2d):
        return Layer(module.in_channels, module.out_channels, module.kernel_size[0], side)
    if not isinstance(module, BasisConv):
        return None
    g, k, weight = module.order, module.kernel_size, module.weight.numel()
    if isinstance(module, LiftConv):
        return Layer(module.in_channels, module.out_fields * g, k, side, True)
    if isinstance(module, GroupUpsample):
        return Layer(module.fields * g, module.fields * g * module.scale**2, k, side, True, weight * g)
    if isinstance(module, GroupConv):
        return Layer(module.in_fields * g, module.out_fields * g, k, side, True, weight * g)
    if isinstance(module, ProjectConv):
        return Layer(module.in_fields * g, module.out_channels, k, side, True)
    return None


def _layers(net: nn.Module, scale: int) -> list[Layer]:
    """The convolutions of a :class:`analysis.models.Backbone` in forward order, sides relative to the input."""

    out: list[Layer] = []

    def walk(module: nn.Module, side: float) -> None:
        for sub in module.modules():
            layer = _layer(sub, side)
            if layer is not None:
                out.append(layer)

    walk(net.head, 1.0)
    walk(net.body, 1.0)
    walk(net.body_tail, 1.0)
    side = 1.0
    for stage, factor in zip(net.upsampler, upsample_stages(scale)):
        walk(stage, side)
        side *= factor
    walk(net.tail, side)
    return out


def train_budget(cfg, *, resume: bool = False, device: str = "cpu") -> Budget:
    """Memory of training the resolved :class:`analysis.config.TrainConfig` ``cfg`` (module docstring);
    ``device`` is ``cpu`` or ``cuda:N`` (then the terms are on that GPU)."""

    pool = "host" if device == "cpu" else device
    kind = "equivariant" if cfg.model == "e2cnn" else cfg.model
    spec = cfg.replace(model=kind, average=None)
    options = {"plain_width": _plain_width(spec)} if kind == "plain" else {}
    depth0 = _build(spec, 0, **options)
    p0 = _count(depth0)
    params = p0
    scale = cfg.scale or 1
    layers = _layers(depth0, scale)
    if cfg.depth > 0:
        depth1 = _build(spec, 1, **options)
        params = p0 + cfg.depth * (_count(depth1) - p0)
        block = [layer for layer in map(lambda m: _layer(m, 1.0), depth1.body.modules()) if layer is not None]
        layers = layers[:1] + block * cfg.depth + layers[1:]
    per_sample = kind in ("sa", "sa-global")
    copies = layer_group(cfg.average).order if cfg.average else 1
    batch = cfg.batch_size / max(1, int(os.environ.get("WORLD_SIZE", "1")))  # torchrun: each rank's share
    side = cfg.patch_size / scale
    channels = 3 if cfg.channels == "rgb" else 1

    def activation(layer: Layer, n: int, s: float) -> float:
        return n * layer.c_in * (layer.side * s) ** 2 * FLOAT32

    def filters(layer: Layer) -> float:
        return layer.c_out * layer.c_in * layer.kernel**2 * FLOAT32 if layer.basis else 0.0

    budget = Budget("this training run")
    lower_model = "--width or --depth"
    budget.add("the parameters, their gradients and Adam's moments (4 x parameters)", 16 * params, lower_model, pool)
    budget.add(
        "the activations kept for the backward pass (batch x patch^2 x width x depth)",
        copies
        * (
            sum(activation(layer, batch, side) for layer in layers) + 2 * batch * channels * cfg.patch_size**2 * FLOAT32
        ),
        "--batch-size, --patch-size, --width or --depth",
        pool,
    )
    budget.add(
        "the expanded filters kept for the backward pass (width^2 x depth)",
        copies * sum(filters(layer) * (batch if per_sample else 1) + layer.shifted * FLOAT32 for layer in layers),
        "--width or --depth" + (" (or --batch-size: one set per sample)" if per_sample else ""),
        pool,
    )
    widest = max(layers, key=lambda layer: activation(layer, batch, side))
    biggest = max(layers, key=filters)
    budget.add(
        "the backward pass's transients (batch x patch^2 x width x kernel^2)",
        3 * activation(widest, batch, side)
        + filters(biggest) * (batch if per_sample else 1)
        + activation(widest, batch, side) * widest.kernel**2,
        "--batch-size, --patch-size or --width",
        pool,
    )
    if cfg.val_images > 0:
        val_side = (cfg.val_crop or UNCROPPED_SIDE) / scale
        budget.add(
            "validation: the cached filters and one image's activations",
            sum(filters(layer) for layer in layers) + 3 * activation(widest, 1, val_side),
            "--width or --depth (or --val-images 0)",
            pool,
        )
    if resume:
        budget.add("the checkpoint read back on --resume (3 x parameters)", 12 * params, lower_model, pool)
    return budget


def check_train(cfg, *, resume: bool = False, max_memory: str | None = None) -> None:
    """Refuse a training config whose memory exceeds ``max_memory`` (e.g. ``"16G"``) or what is available."""

    device = resolve_device(cfg.device)
    name = "cpu" if device.type != "cuda" else f"cuda:{device.index or 0}"
    limit = parse_memory(max_memory) if max_memory is not None else None
    budget = train_budget(cfg, resume=resume, device=name)
    check(budget.scaled(local_processes()) if name == "cpu" else budget, limit)
