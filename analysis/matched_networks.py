"""The network family of the bias-variance experiment: analysis networks at widths matched in parameter count,
trained by :func:`analysis.fit.fit` until an explicit convergence rule holds; forward FLOPs measured by counting.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from analysis.fit import fit, loss_fn
from analysis.linear_denoisers import arm
from analysis.models import build_model, count_parameters
from symmetry.errors import UsageError
from symmetry.groups import get_group
from symmetry.streams import rng, seed_of
from symmetry.transforms import transform_image


def network(model: str, width: int, cell: dict) -> torch.nn.Module:
    common = dict(in_channels=1, depth=cell["depth"], kernel_size=cell["kernel_size"])
    kind, _ = arm(model)
    if kind in ("plain", "aug", "avg"):
        return build_model("plain", plain_width=width, **common)
    if kind == "sa":
        return build_model("sa", group=cell["match_group"], width=width, **common)
    return build_model("equivariant", group=model, width=width, **common)


@lru_cache(maxsize=64)
def matched_width(model: str, match_group: str, match_width: int, depth: int, kernel_size: int) -> int:
    """The width whose parameter count is closest to that of ``equivariant`` ``match_group`` at ``match_width``
    (plain and the arms: channels; equivariant models: fields per group element)."""
    cell = {"depth": depth, "kernel_size": kernel_size, "match_group": match_group}
    target = count_parameters(network(match_group, match_width, cell))
    best, gap = 1, math.inf
    for width in range(1, 65):
        count = count_parameters(network(model, width, cell))
        if abs(count - target) < gap:
            best, gap = width, abs(count - target)
        if count > target:
            break
    return best


def build_network(cell: dict) -> torch.nn.Module:
    """The analysis network of a ``cnn`` cell at the width that matches the parameter count of ``match_group``."""
    width = matched_width(cell["model"], cell["match_group"], cell["match_width"], cell["depth"], cell["kernel_size"])
    return network(cell["model"], width, cell)


def forward_flops(net: torch.nn.Module, side: int, device: torch.device) -> int:
    """Floating-point operations of one forward pass on a ``1 x 1 x side x side`` image
    (:class:`torch.utils.flop_counter.FlopCounterMode`: convolutions and matrix products)."""
    x = torch.zeros(1, 1, side, side, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return int(counter.get_total_flops())


def predict(net: torch.nn.Module, noisy: torch.Tensor, radius: int, device: torch.device, batch: int = 64):
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, noisy.shape[0], batch):
            x = noisy[start : start + batch, None].to(device, torch.float32)
            out.append(net(x)[:, 0, radius:-radius, radius:-radius].double().cpu())
    return torch.cat(out)


def stalled(history: list[float], tol: float) -> bool:
    """The plateau test: the last full training loss fell by less than ``tol`` (relative) below the one before."""
    return len(history) >= 2 and history[-2] - history[-1] < tol * history[-2]


def training_loss(net: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor, radius: int) -> float:
    """The empirical risk the training minimises, computed exactly: mean squared error of ``net`` on every training
    window (whole windows minus the ``radius`` margin, no crops), in evaluation mode."""
    net.eval()
    with torch.no_grad():
        out = net(noisy)[..., radius:-radius, radius:-radius]
        return float(torch.nn.functional.mse_loss(out, clean[..., radius:-radius, radius:-radius]))


def train_network(cell: dict, seed: int, noisy: torch.Tensor, clean: torch.Tensor, device: torch.device):
    """Adam (:func:`analysis.fit.fit`) on one seed's fixed training pairs until convergence or ``max_steps``.

    Batches: ``batch_size`` random ``crop x crop`` crops of the seed's windows, MSE on the crop minus the ``radius``
    margin; ``aug:G`` transforms each batch by a random element of G (exact for quarter turns). The convergence
    rule, explicit: every ``check_every`` steps the full training loss (:func:`training_loss`, no batch noise) is
    computed; when it fell by less than ``tol`` (relative) since the previous check (:func:`stalled`), the learning
    rate is multiplied by ``lr_decay`` (a fresh Adam at the lower rate), up to ``decays`` times; a stall at the
    final rate ``lr * lr_decay ** decays`` is convergence. ``max_steps`` stops a run that has not converged.
    Initialisation and batches come from the named streams ``init`` and ``batches`` of ``seed``. Returns the
    network, the steps taken and whether it converged."""
    r, crop, window = cell["radius"], cell["crop"], cell["window"]
    if not 2 * r < crop <= window:
        raise UsageError(f"crop {crop} must exceed 2 * radius ({2 * r}) and be at most the window ({window})")
    torch.manual_seed(seed_of(seed, "init"))
    net = build_network(cell).to(device)
    x_all = noisy[:, None].to(device, torch.float32)
    y_all = clean[:, None].to(device, torch.float32)
    size = min(cell["batch_size"], x_all.shape[0])
    kind, group = arm(cell["model"])
    elements = list(get_group(group)) if kind == "aug" else []

    def batches(k: int):
        draw = rng(seed, "batches", k)
        idx = torch.from_numpy(draw.choice(x_all.shape[0], size, replace=False)).to(device)
        top, left = (int(v) for v in draw.integers(0, window - crop + 1, 2))
        x = x_all[idx, :, top : top + crop, left : left + crop]
        y = y_all[idx, :, top : top + crop, left : left + crop]
        if elements:
            el = elements[int(draw.integers(0, len(elements)))]
            x, y = transform_image(x, el)[0], transform_image(y, el)[0]
        return x, y

    def step(model: torch.nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return loss_fn("l2", model(x)[..., r:-r, r:-r], y[..., r:-r, r:-r])

    every, tol, total = cell["check_every"], cell["tol"], cell["max_steps"]
    history = [training_loss(net, x_all, y_all, r)]

    def check(info) -> bool:
        if info.step % every:
            return False
        history.append(training_loss(info.model, x_all, y_all, r))
        return stalled(history, tol)

    lr, decays, done, converged = float(cell["lr"]), 0, 0, False
    while done < total:
        result = fit(
            net,
            step,
            lambda k, offset=done: batches(offset + k),
            steps=total - done,
            lr=lr,
            schedule="constant",
            device=device,
            callback=check,
        )
        done += result.step
        if not stalled(history, tol):  # max_steps reached without a stall
            break
        if decays == cell["decays"]:
            converged = True
            break
        lr, decays = lr * cell["lr_decay"], decays + 1
    return net, done, converged
