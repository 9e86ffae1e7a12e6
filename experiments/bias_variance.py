"""``bias_variance``: risk of denoisers with more or less equivariance than the data's symmetry (theory.md, Section 4).

Section 4 predicts that forcing more equivariance than the data has adds bias (growing with eps), that allowing less
leaves more variance (worst with little data), and that the risk is smallest when the model's equivariance matches the
data's symmetry. Here the data's symmetry is known by construction (``symmetry.synthetic``: isotropic = every rotation,
kfold k=4 = quarter turns only, vonmises = half turns only, since the atoms are symmetric under a half turn) or unknown
(photographs: scikit-image's and Rain100L's clean images).

Every dataset is cut into non-overlapping ``window x window`` samples of clean gray images; the training pool and the
test set come from different images. Seed ``s`` trains on the samples ``[s * block, s * block + n_train)`` of the
shuffled pool (``block = max(n_train)``), so the training sets of different seeds are disjoint, with their own fixed
Gaussian noise (``sigma`` in 0-255 units; synthetic images are scaled to a pixel standard deviation of ``signal_std``,
that of photographs in [0, 1]). The test set (fixed noise) is the same for every model and seed, and every model is
scored on the same pixels: the window minus a ``radius`` margin. :func:`analysis.bias_variance.decompose` splits the
seed-averaged test error into ``bias2`` and ``variance``.

Two families of models:

- ``linear``: a correlation filter on a disk of taps fitted in closed form by least squares, constrained to be
  G-invariant by group averaging (Lemma 4.1) for G in plain, rot2, rot4, rot8, rot16, and ``sa``: a G-invariant filter
  rotated per sample by the sample's structure-tensor orientation (the linear analogue of SA-Conv's per-sample ``D_w``).
  Its ``noise`` is the test error of the plain filter fitted on the whole pool (the floor of the linear class; the
  Bayes error of these non-Gaussian images is lower), ``oracle_risk`` the test error of the model's own filter fitted
  on the whole pool (its risk with unlimited data, i.e. its approximation bias).
- ``cnn``: the analysis networks (:func:`analysis.models.build_model`: plain, equivariant rotN, sa) at tiny widths
  matched in parameter count (FLOPs reported), trained on the same training sets until an explicit convergence rule
  holds (:func:`train_network`: the full training loss stalls at the final learning rate) or ``max_steps``; seeds
  differ in data and initialisation, so their variance includes the optimiser's. Their irreducible error is
  unknown: ``bias2`` includes it.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from experiments.runner import Context, SkipCell
from symmetry.errors import UsageError

LADDER = ["plain", "rot2", "rot4", "rot8", "rot16"]
"""Models ordered by increasing equivariance (each group contains the previous one). Arms beside the ladder:
``aug:rotN`` (plain model trained on rotN-augmented data), ``avg:rotN`` (Lemma 4.1 group average of the trained
plain model) and ``sa``."""
SYMMETRY_ORDERS = {"none": 1, "rot2": 2, "rot4": 4, "rot8": 8, "rot16": 16, "so2": math.inf}
_DATA_KEYS = ("window", "radius", "sigma", "signal_std", "pool_windows", "test_windows", "data_seed", "max_images")
LEVEL = 0.95
"""Confidence level of every interval: paired Student t over seeds."""


def model_order(models) -> list[str]:
    """The ladder first, then the arms (``aug:``, ``avg:``), then ``sa``."""
    present = list(dict.fromkeys(str(m) for m in models))
    rest = sorted(m for m in present if m not in LADDER and m != "sa")
    return [m for m in LADDER if m in present] + rest + (["sa"] if "sa" in present else [])


# ---- configuration -> cells ----------------------------------------------------------------


def sweep_datasets(config: dict) -> list[dict]:
    """The eps sweep: one dataset per kappa of ``config["sweep"]`` (kappa = 0 is isotropic, larger kappa less
    symmetric beyond the family's own group)."""
    sw = config.get("sweep")
    if not sw:
        return []
    return [
        {
            "name": f"{sw['name']}-kappa{kappa:g}",
            "spec": f"{sw['spec']},kappa={kappa:g}",
            "symmetry": "so2" if kappa == 0 else sw["symmetry"],
            "kappa": float(kappa),
        }
        for kappa in sw["kappas"]
    ]


def _dataset(ds: dict) -> dict:
    return {"name": ds["name"], "spec": ds["spec"], "symmetry": ds["symmetry"], "kappa": ds.get("kappa")}


def cells(config: dict) -> list[dict]:
    """One cell per (family, dataset, model, training-set size) -- each fits every seed -- plus one ``measure``
    cell per dataset (its measured symmetry, item 5)."""
    data = {k: config[k] for k in _DATA_KEYS}
    seeds = list(config["seeds"])
    lin = config["linear"]
    block = max([*lin["n_train"], *config.get("sweep", {}).get("n_train", [])])
    out = []

    def linear(ds: dict, models, sizes) -> None:
        for model in models:
            for n in sizes:
                cell = {"family": "linear", "dataset": _dataset(ds), "model": model, "n_train": n, "block": block}
                cell.update(data, seeds=seeds, sa_group=lin["sa_group"], angle_step=lin["angle_step"])
                out.append(cell)

    for ds in config["datasets"]:
        linear(ds, lin["models"], lin["n_train"])
    sweep = config.get("sweep")
    for ds in sweep_datasets(config):
        linear(ds, sweep["models"], sweep["n_train"])
    cnn = config.get("cnn")
    if cnn:
        keys = ("match_group", "match_width", "depth", "kernel_size", "max_steps", "check_every", "tol", "lr")
        keys += ("lr_decay", "decays")
        for ds in config["datasets"]:
            if ds["name"] not in cnn["datasets"]:
                continue
            for model in cnn["models"]:
                for n in cnn["n_train"]:
                    cell = {"family": "cnn", "dataset": _dataset(ds), "model": model, "n_train": n}
                    cell.update(data, block=block, seeds=list(cnn["seeds"]), batch_size=cnn["batch_size"])
                    cell.update({k: cnn[k] for k in keys}, crop=cnn["crop"], average=list(cnn["average"]))
                    out.append(cell)
    meas = config.get("measure")
    if meas:
        for ds in [*config["datasets"], *sweep_datasets(config)]:
            cell = {"family": "measure", "dataset": _dataset(ds), "data_seed": config["data_seed"]}
            cell.update({k: meas[k] for k in sorted(meas)})
            out.append(cell)
    return out


# ---- data -----------------------------------------------------------------------------------


def _tiles(image: torch.Tensor, window: int) -> torch.Tensor:
    """Non-overlapping ``window x window`` tiles of a ``(1, H, W)`` image: ``(K, window, window)``."""
    img = image[0]
    h, w = (img.shape[0] // window) * window, (img.shape[1] // window) * window
    t = img[:h, :w].reshape(h // window, window, w // window, window).permute(0, 2, 1, 3)
    return t.reshape(-1, window, window)


SHADOW = "shadow:"
"""Spec prefix of a polar dataset: ``shadow:SPEC`` is ``s = relu(x) + SHADOW_GAIN * relu(x)`` shifted down by
``SHADOW_SHIFT`` pixels (bright atoms casting a dimmer copy below them). Its covariance is, like every stationary
covariance, unchanged by a half turn, so linear filters cannot see its asymmetry; a half turn (or an up-down flip)
moves the shadow above the atom, which a nonlinear model can tell apart: rot2 and larger groups pay a bias."""
SHADOW_GAIN, SHADOW_SHIFT = 0.6, 3


def shadow(image: torch.Tensor) -> torch.Tensor:
    """The ``shadow:`` transform of a ``(1, H, W)`` image (zeros enter at the top edge)."""
    lit = image.clamp(min=0)
    below = torch.zeros_like(lit)
    below[:, SHADOW_SHIFT:] = lit[:, :-SHADOW_SHIFT]
    return lit + SHADOW_GAIN * below


def _images(spec: str, split: str, count: int | None, data_root: str | None) -> list[torch.Tensor]:
    """Clean gray ``(1, H, W)`` float64 images of a dataset split (``count`` images for synthetic data)."""
    from analysis.tasks import load_items

    if spec.startswith(SHADOW):
        return [shadow(im) for im in _images(spec[len(SHADOW) :], split, count, data_root)]
    data = f"{spec},n={count}" if spec.startswith("synthetic") and count else spec
    items = load_items("denoise", data, split=split, data_root=data_root, channels="gray", max_images=count)
    return [it.target.to(torch.float64) for it in items]


def _base_spec(spec: str) -> str:
    return spec[len(SHADOW) :] if spec.startswith(SHADOW) else spec


def _split_seed(data_seed: int, split: str) -> int:
    return int(np.random.default_rng([data_seed, {"train": 1, "test": 2}[split]]).integers(0, 2**62))


@lru_cache(maxsize=8)
def _pools(spec: str, key: tuple, data_root: str | None) -> dict[str, torch.Tensor]:
    """Clean and noisy training pool and test set, ``(N, window, window)`` float64 (cached per process)."""
    p = dict(key)
    window = p["window"]
    synthetic = _base_spec(spec).startswith("synthetic")
    out: dict[str, torch.Tensor] = {}
    for split, want in (("train", p["pool_windows"]), ("test", p["test_windows"])):
        if synthetic:
            from symmetry.synthetic import DEFAULTS, parse_spec

            size = int(parse_spec(_base_spec(spec))[1].get("size", DEFAULTS["size"]))
            per_image = (size // window) ** 2
            if per_image < 1:
                raise UsageError(f"synthetic images of size {size} are smaller than the window {window}")
            images = _images(spec, split, math.ceil(want / per_image), None)
        else:
            images = _images(spec, split, p["max_images"] or None, data_root)
        tiles = torch.cat([_tiles(im, window) for im in images])
        rng = np.random.default_rng(_split_seed(p["data_seed"], split))
        order = torch.from_numpy(rng.permutation(tiles.shape[0]))
        out[f"{split}_clean"] = tiles[order][:want].contiguous()
    if synthetic:  # scale to the pixel std of photographs; one constant per dataset, from its training pool
        scale = p["signal_std"] / float(out["train_clean"].std())
        out = {k: v * scale for k, v in out.items()}
    for split in ("train", "test"):
        gen = torch.Generator().manual_seed(_split_seed(p["data_seed"], split) % 2**63)
        clean = out[f"{split}_clean"]
        noise = torch.randn(clean.shape, generator=gen, dtype=torch.float64)
        out[f"{split}_noisy"] = clean + (p["sigma"] / 255.0) * noise
    return out


def _data_key(cell: dict) -> tuple:
    return tuple((k, cell[k]) for k in _DATA_KEYS)


def _data_root(cell: dict, ctx: Context) -> str | None:
    """The data root for the cell's dataset; :class:`SkipCell` when a real dataset is absent."""
    if cell["dataset"]["spec"] == "rain100l" and not ctx.data_available("rain100l"):
        raise SkipCell(f"rain100l not found under {ctx.data_root}; pass --data-root")
    return str(ctx.data_root) if ctx.data_root else None


def load_pools(cell: dict, ctx: Context) -> dict[str, torch.Tensor]:
    """The cell's training pool and test set (clean and noisy windows)."""
    return _pools(cell["dataset"]["spec"], _data_key(cell), _data_root(cell, ctx))


def seed_subset(seed: int, n_train: int, block: int, pool_size: int) -> np.ndarray:
    """Indices of seed ``seed``'s training samples in the shuffled pool: ``[seed * block, seed * block + n_train)``.

    Different seeds get disjoint blocks; within a seed, smaller training sets are prefixes of larger ones.
    """
    if n_train > block:
        raise UsageError(f"n_train {n_train} exceeds the per-seed block {block}")
    start = seed * block
    if start + n_train > pool_size:
        raise UsageError(
            f"seed {seed} with n_train {n_train} needs {start + n_train} pool samples, the pool has {pool_size}; "
            "use fewer seeds, a smaller n_train or a larger pool_windows/max_images"
        )
    return np.arange(start, start + n_train)


# ---- linear family ----------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _prepared(spec: str, key: tuple, data_root: str | None) -> dict[str, torch.Tensor]:
    """The pools plus what every linear cell of a dataset shares: test tap vectors, targets, per-sample angles."""
    from analysis.bias_variance import dominant_orientation, interior, patch_vectors

    prep = dict(_pools(spec, key, data_root))
    r = dict(key)["radius"]
    n = prep["test_noisy"].shape[0]
    prep["test_patches"] = patch_vectors(prep["test_noisy"], r).flatten(1, 2)
    prep["test_target"] = interior(prep["test_clean"], r).reshape(n, -1)
    prep["train_angles"] = dominant_orientation(prep["train_noisy"])
    prep["test_angles"] = dominant_orientation(prep["test_noisy"])
    # per-window normal equations: a seed's least squares is a sum over its windows (no patch extraction per fit)
    grams, crosses, squares = [], [], []
    for start in range(0, prep["train_noisy"].shape[0], 64):
        v = patch_vectors(prep["train_noisy"][start : start + 64], r).flatten(1, 2)
        x = interior(prep["train_clean"][start : start + 64], r).flatten(1)
        grams.append(torch.einsum("nqi,nqj->nij", v, v))
        crosses.append(torch.einsum("nqi,nq->ni", v, x))
        squares.append(x.square().sum(1))
    prep["train_gram"], prep["train_cross"], prep["train_square"] = (
        torch.cat(grams),
        torch.cat(crosses),
        torch.cat(squares),
    )
    return prep


def _prepare(cell: dict, ctx: Context) -> dict[str, torch.Tensor]:
    return _prepared(cell["dataset"]["spec"], _data_key(cell), _data_root(cell, ctx))


@lru_cache(maxsize=32)
def linear_basis(model: str, radius: int, sa_group: str, angle_step: float) -> torch.Tensor:
    """The filters a linear model may use: G-invariant (``rotN``), all (``plain``, ``aug:``, ``avg:``), or for ``sa``
    the ``sa_group``-invariant filters that interpolated rotations keep
    (:func:`analysis.bias_variance.rotatable_basis`)."""
    from analysis.bias_variance import invariant_basis, rotatable_basis

    if model == "sa":
        return rotatable_basis(radius, sa_group, angle_step)
    if ":" in model:
        return invariant_basis(radius, "plain")
    return invariant_basis(radius, model)


def arm(model: str) -> tuple[str, str | None]:
    """``"aug:rot4"`` -> ``("aug", "rot4")``; a ladder model or ``sa`` -> ``(model, None)``."""
    if ":" not in model:
        return model, None
    kind, group = model.split(":", 1)
    if kind not in ("aug", "avg"):
        raise UsageError(f"unknown model arm {model!r}; use aug:GROUP or avg:GROUP")
    return kind, group


def _fit(cell: dict, prep: dict, index: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Least-squares filter on the training samples ``index`` of the pool (per-sample rotations for ``sa``;
    augmented normal equations for ``aug:G``; the group average ``Pi_G`` of the plain fit for ``avg:G``)."""
    from analysis.bias_variance import (
        augmented_normal_equations,
        fit_filter,
        group_average_operator,
        normal_equations,
        rotation_operators,
    )

    if cell["model"] == "sa":
        ops = rotation_operators(cell["radius"], prep["train_angles"][index], cell["angle_step"])
        a, b, _ = normal_equations(prep["train_noisy"][index], prep["train_clean"][index], cell["radius"], ops)
    else:
        a, b = prep["train_gram"][index].sum(0), prep["train_cross"][index].sum(0)
    kind, group = arm(cell["model"])
    if kind == "aug":
        a, b = augmented_normal_equations(a, b, cell["radius"], group)
    w = fit_filter(a, b, basis)
    if kind == "avg":
        w = group_average_operator(cell["radius"], group) @ w
    return w


def _apply(cell: dict, weights: torch.Tensor, patches: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Predictions ``(S, N, Q)`` of filters ``weights`` ``(S, P)`` from tap vectors ``patches`` ``(N, Q, P)``."""
    from analysis.bias_variance import rotation_operators

    if cell["model"] != "sa":
        return torch.einsum("nqp,sp->snq", patches, weights)
    ops = rotation_operators(cell["radius"], angles, cell["angle_step"])
    return torch.einsum("nqp,snp->snq", patches, torch.einsum("npk,sk->snp", ops, weights))


@lru_cache(maxsize=64)
def _oracle(spec: str, key: tuple, data_root: str | None, model: str, sa_group: str, angle_step: float) -> float:
    """Test MSE of ``model``'s filter fitted on the whole training pool (its risk with unlimited data)."""
    prep = _prepared(spec, key, data_root)
    cell = {"model": model, "radius": dict(key)["radius"], "angle_step": angle_step}
    basis = linear_basis(model, cell["radius"], sa_group, angle_step)
    w = _fit(cell, prep, torch.arange(prep["train_noisy"].shape[0]), basis)
    pred = _apply(cell, w[None], prep["test_patches"], prep["test_angles"])[0]
    return float((pred - prep["test_target"]).square().mean())


def run_linear(cell: dict, ctx: Context) -> dict:
    """Fit the linear model on every seed's training set; predictions ``(S, N, Q)`` on the test set."""
    from analysis.bias_variance import interior, patch_vectors

    prep = _prepare(cell, ctx)
    r = cell["radius"]
    basis = linear_basis(cell["model"], r, cell["sa_group"], cell["angle_step"])
    weights, train_risks = [], []
    for seed in cell["seeds"]:
        idx = torch.from_numpy(seed_subset(seed, cell["n_train"], cell["block"], prep["train_clean"].shape[0]))
        w = _fit(cell, prep, idx, basis)
        if cell["model"] == "sa":
            noisy = prep["train_noisy"][idx]
            patches = patch_vectors(noisy, r).reshape(len(idx), -1, basis.shape[0])
            fitted = _apply(cell, w[None], patches, prep["train_angles"][idx])[0]
            target = interior(prep["train_clean"][idx], r).reshape(len(idx), -1)
            train_risks.append(float((fitted - target).square().mean()))
        else:  # ||V w - x||^2 = w^T A w - 2 w^T b + x^T x, summed over the seed's windows
            a, b = prep["train_gram"][idx].sum(0), prep["train_cross"][idx].sum(0)
            sse = w @ a @ w - 2 * w @ b + prep["train_square"][idx].sum()
            train_risks.append(float(sse) / (len(idx) * (cell["window"] - 2 * r) ** 2))
        weights.append(w)
    preds = _apply(cell, torch.stack(weights), prep["test_patches"], prep["test_angles"])
    oracle = (cell["dataset"]["spec"], _data_key(cell), _data_root(cell, ctx))
    return {
        "preds": preds,
        "targets": prep["test_target"],
        "train_risks": train_risks,
        "noise": _oracle(*oracle, "plain", cell["sa_group"], cell["angle_step"]),
        "oracle_risk": _oracle(*oracle, cell["model"], cell["sa_group"], cell["angle_step"]),
        "params": int(linear_basis(arm(cell["model"])[1] or cell["model"], r, cell["sa_group"], 1.0).shape[1]),
        "pools": prep,
    }


# ---- network family ---------------------------------------------------------------------------


def _network(model: str, width: int, cell: dict) -> torch.nn.Module:
    from analysis.models import build_model

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
    from analysis.models import count_parameters

    cell = {"depth": depth, "kernel_size": kernel_size, "match_group": match_group}
    target = count_parameters(_network(match_group, match_width, cell))
    best, gap = 1, math.inf
    for width in range(1, 65):
        count = count_parameters(_network(model, width, cell))
        if abs(count - target) < gap:
            best, gap = width, abs(count - target)
        if count > target:
            break
    return best


def build_network(cell: dict) -> torch.nn.Module:
    """The analysis network of a ``cnn`` cell at the width that matches the parameter count of ``match_group``."""
    width = matched_width(cell["model"], cell["match_group"], cell["match_width"], cell["depth"], cell["kernel_size"])
    return _network(cell["model"], width, cell)


def forward_flops(net: torch.nn.Module, side: int, device: torch.device) -> int:
    """Floating-point operations of one forward pass on a ``1 x 1 x side x side`` image
    (:class:`torch.utils.flop_counter.FlopCounterMode`: convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 1, side, side, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return int(counter.get_total_flops())


def _predict(net: torch.nn.Module, noisy: torch.Tensor, radius: int, device: torch.device, batch: int = 64):
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
    from analysis.fit import fit, loss_fn
    from symmetry.groups import get_group
    from symmetry.streams import rng, seed_of
    from symmetry.transforms import transform_image

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


def run_cnn(cell: dict, ctx: Context) -> dict:
    """Train the cell's network on every seed; for ``plain`` also the Lemma 4.1 averages ``avg:G`` of the same
    trained networks (:class:`analysis.models.GroupAverage`) for every G in ``average``."""
    from analysis.bias_variance import interior
    from analysis.models import GroupAverage, count_parameters

    pools = load_pools(cell, ctx)
    r = cell["radius"]
    averaged = cell["average"] if cell["model"] == "plain" else []
    preds: dict[str, list] = {cell["model"]: [], **{f"avg:{g}": [] for g in averaged}}
    train_risks: dict[str, list] = {k: [] for k in preds}
    steps, converged = [], []
    net = None
    for seed in cell["seeds"]:
        idx = torch.from_numpy(seed_subset(seed, cell["n_train"], cell["block"], pools["train_clean"].shape[0]))
        noisy, clean = pools["train_noisy"][idx], pools["train_clean"][idx]
        net, taken, done = train_network(cell, seed, noisy, clean, ctx.device)
        steps.append(taken)
        converged.append(done)
        models = {cell["model"]: net, **{f"avg:{g}": GroupAverage(net, g) for g in averaged}}
        for name, m in models.items():
            train_risks[name].append(float((_predict(m, noisy, r, ctx.device) - interior(clean, r)).square().mean()))
            preds[name].append(_predict(m, pools["test_noisy"], r, ctx.device))
    flops = forward_flops(net, cell["window"], ctx.device)
    return {
        name: {
            "preds": torch.stack(preds[name]),
            "targets": interior(pools["test_clean"], r),
            "train_risks": train_risks[name],
            "noise": None,
            "oracle_risk": math.nan,
            "params": count_parameters(net),
            "flops": flops * (1 if name == cell["model"] else GroupAverage(net, name[4:]).cost_factor),
            "steps": float(np.mean(steps)),
            "converged": float(np.mean(converged)),
            "pools": pools,
        }
        for name in preds
    }


# ---- one cell -----------------------------------------------------------------------------------


def _row(cell: dict, ctx: Context, model: str, out: dict) -> dict:
    from analysis.bias_variance import decompose, interior

    pools, r = out["pools"], cell["radius"]
    target = interior(pools["test_clean"], r)
    parts = decompose(out["preds"], out["targets"], noise=out["noise"])
    per_seed = (out["preds"].double() - out["targets"].double()).square().flatten(1).mean(1)
    train_risk = float(np.mean(out["train_risks"]))
    return {
        "model": model,
        "dataset_name": cell["dataset"]["name"],
        "data_symmetry": cell["dataset"]["symmetry"],
        "kappa": cell["dataset"].get("kappa"),
        "risk": parts["risk"],
        "bias2": parts["bias2"],
        "variance": parts["variance"],
        "noise": parts.get("noise", math.nan),
        "excess_bias2": parts.get("excess_bias2", math.nan),
        "train_risk": train_risk,
        "generalization_gap": parts["risk"] - train_risk,
        "oracle_risk": out["oracle_risk"],
        "input_risk": float((interior(pools["test_noisy"], r) - target).square().mean()),
        "risk_seed_std": parts["risk_seed_std"],
        "seed_risks": json.dumps([float(v) for v in per_seed]),
        "params": out["params"],
        "flops": out.get("flops", math.nan),
        "steps_mean": out.get("steps", math.nan),
        "converged_fraction": out.get("converged", math.nan),
        "n_train_pixels": cell["n_train"] * (cell["window"] - 2 * r) ** 2,
        "n_seeds": parts["n_seeds"],
        "n_test_values": parts["n_values"],
        "device": str(ctx.device) if cell["family"] == "cnn" else "cpu",
    }


def run_cell(cell: dict, ctx: Context) -> list[dict]:
    """Fit the cell's model on every seed's training set and decompose its test error into bias^2 and variance;
    or, for a ``measure`` cell, measure the dataset's symmetry (:func:`measured_symmetry`)."""
    if cell["family"] == "measure":
        return measured_symmetry(cell, ctx)
    if cell["family"] == "linear":
        return [_row(cell, ctx, cell["model"], run_linear(cell, ctx))]
    if cell["family"] == "cnn":
        return [_row(cell, ctx, name, out) for name, out in run_cnn(cell, ctx).items()]
    raise UsageError(f"unknown model family {cell['family']!r}")


# ---- measured symmetry (issue item 5) -------------------------------------------------------------


def pick_group(verdicts: dict[str, bool | None], ladder=LADDER) -> str:
    """The largest ladder group inside the measured symmetry: walking up the chain plain < rot2 < rot4 < ...,
    the last group before the first one whose Holm-adjusted test rejects symmetry (``False``) or has no verdict."""
    picked = "plain"
    for group in ladder[1:]:
        if group not in verdicts:
            continue
        if verdicts[group] is not True:
            break
        picked = group
    return picked


def measure_report(sources: list, cell: dict):
    """``symmetry.measure`` on clean training images of a dataset (the rasters the models see, so rotations by
    other than quarter turns are interpolated), every measured group in one call (one Holm family), at one mesh.
    The only place this experiment calls the measurement API."""
    from symmetry.measurement import measure_dataset

    return measure_dataset(
        sources,
        cell["groups"],
        mesh=float(cell["mesh"]),
        radius=float(cell["radius_px"]),
        windows=int(cell["windows"]),
        features=int(cell["features"]),
        permutations=int(cell["permutations"]),
        bootstrap=int(cell["bootstrap"]),
        seed=int(cell["data_seed"]),
        alpha=float(cell["alpha"]),
        device="cpu",
    )


def measured_symmetry(cell: dict, ctx: Context) -> list[dict]:
    """One row per measured group: worst-element eps at the mesh, its null q95, Holm-adjusted p, the verdict, and
    the group this picks (:func:`pick_group`)."""
    from symmetry.data import ImageSource

    spec, count = cell["dataset"]["spec"], int(cell["images"])
    images = _images(spec, "train", count, _data_root(cell, ctx))[:count]
    sources = [ImageSource(f"image-{i}", array=im) for i, im in enumerate(images)]
    report = measure_report(sources, cell)
    verdicts = {v["group"]: v["symmetric"] for v in report.verdicts}
    picked = pick_group(verdicts)
    rows = []
    for group in verdicts:
        worst = report.summary("worst", group).iloc[0]
        rows.append(
            {
                "dataset_name": cell["dataset"]["name"],
                "data_symmetry": cell["dataset"]["symmetry"],
                "kappa": cell["dataset"].get("kappa"),
                "group": group,
                "eps": float(worst["symmetry_error"]),
                "eps_low": float(worst["ci_low"]),
                "eps_high": float(worst["ci_high"]),
                "null_q95": float(worst["null_q95"]),
                "p_adjusted": float(report.verdict(group)["p_adjusted"]),
                "symmetric": verdicts[group],
                "picked": picked,
                "images": len(sources),
            }
        )
    return rows


# ---- summaries, figures, verdict ----------------------------------------------------------------


def matched_model(symmetry: str, models) -> str | None:
    """The ladder model whose group is the largest one inside the data's symmetry group (None when it is unknown).

    ``rotK`` lies inside ``rotN`` when K divides N, and inside ``so2`` always; ``plain`` lies inside everything.
    """
    order = SYMMETRY_ORDERS.get(symmetry)
    if order is None:
        return None
    present = set(models)

    def inside(model: str) -> bool:
        k = 1 if model == "plain" else int(model[3:])
        return math.isinf(order) or order % k == 0

    candidates = [m for m in LADDER if m in present and inside(m)]
    return candidates[-1] if candidates else None


def _models_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["family"].isin(["linear", "cnn"])]


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (family, dataset, n_train, model) in :func:`model_order`, with the decomposition's columns."""
    cols = [
        "risk",
        "bias2",
        "variance",
        "noise",
        "excess_bias2",
        "generalization_gap",
        "train_risk",
        "oracle_risk",
        "input_risk",
        "params",
        "flops",
        "steps_mean",
        "converged_fraction",
        "n_train_pixels",
    ]
    f = _models_frame(frame)
    cols = [c for c in cols if c in f.columns]
    keys = ["family", "dataset_name", "data_symmetry", "n_train", "model"]
    t = f.groupby(keys, sort=False, dropna=False)[cols].mean().reset_index()
    t["model"] = pd.Categorical(t["model"], model_order(t["model"]), ordered=True)
    return t.sort_values(["family", "dataset_name", "n_train", "model"]).reset_index(drop=True)


def seed_risks(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (family, dataset, n_train, model, seed) with that seed's test risk."""
    rows = []
    for r in _models_frame(frame).itertuples():
        for seed, risk in zip(json.loads(r.seeds), json.loads(r.seed_risks)):
            rows.append(
                {
                    "family": r.family,
                    "dataset_name": r.dataset_name,
                    "data_symmetry": r.data_symmetry,
                    "n_train": int(r.n_train),
                    "model": r.model,
                    "seed": int(seed),
                    "risk": float(risk),
                }
            )
    return pd.DataFrame(rows)


def _diff(per_seed: pd.DataFrame, a: str, b: str) -> dict[str, float]:
    """Paired ``risk_a - risk_b`` over the seeds both models have (:func:`analysis.bias_variance.paired_difference`)."""
    from analysis.bias_variance import paired_difference

    wide = per_seed.pivot(index="seed", columns="model", values="risk")[[a, b]].dropna()
    return paired_difference(wide[a].to_numpy(), wide[b].to_numpy(), LEVEL)


def decisions(frame: pd.DataFrame) -> pd.DataFrame:
    """Every "best group" decision with its uncertainty, per (family, dataset, n_train).

    ``best``: the ladder model of lowest mean risk. ``runner_up`` and ``diff``/``low``/``high``: the paired
    difference runner-up minus best with its 95% t interval over seeds. ``tied``: the ladder models whose paired
    interval against the best contains 0 (the decision is ``resolved`` when there are none). ``matched``: the
    ladder model matching the data's known symmetry, with ``matched_diff`` (matched minus best) and its interval.
    Arms: ``aug:G``/``avg:G`` minus the constrained model ``G`` (``arm_...`` columns, one row per arm in ``arms``).
    """
    per_seed = seed_risks(frame)
    rows = []
    for (family, name, sym, n), sub in per_seed.groupby(
        ["family", "dataset_name", "data_symmetry", "n_train"], sort=False
    ):
        means = sub.groupby("model")["risk"].mean()
        ladder = [m for m in LADDER if m in means.index]
        if len(ladder) < 2:
            continue
        best = min(ladder, key=lambda m: means[m])
        diffs = {m: _diff(sub, m, best) for m in ladder if m != best}
        runner = min(diffs, key=lambda m: diffs[m]["mean"])
        tied = [m for m, d in diffs.items() if not d["low"] > 0]
        match = matched_model(sym, ladder)
        md = _diff(sub, match, best) if match and match != best else None
        arms = {}
        for m in means.index:
            kind, group = arm(m)
            if kind in ("aug", "avg") and group in means.index:
                arms[m] = _diff(sub, m, group)
        rows.append(
            {
                "family": family,
                "dataset_name": name,
                "data_symmetry": sym,
                "n_train": int(n),
                "best": best,
                "best_risk": float(means[best]),
                "runner_up": runner,
                "diff": diffs[runner]["mean"],
                "low": diffs[runner]["low"],
                "high": diffs[runner]["high"],
                "tied": ",".join(tied),
                "resolved": not tied,
                "matched": match,
                "matches": None if match is None else best == match,
                "matched_diff": 0.0 if match == best else (md["mean"] if md else math.nan),
                "matched_low": 0.0 if match == best else (md["low"] if md else math.nan),
                "matched_high": 0.0 if match == best else (md["high"] if md else math.nan),
                "arms": json.dumps({k: [v["mean"], v["low"], v["high"]] for k, v in arms.items()}),
                "n_seeds": int(sub["seed"].nunique()),
            }
        )
    return pd.DataFrame(rows)


def minima(frame: pd.DataFrame) -> pd.DataFrame:
    """The decisions table (kept under its old name): :func:`decisions`."""
    return decisions(frame)


def phase(frame: pd.DataFrame) -> pd.DataFrame:
    """The eps sweep: per (kappa, n_train) the measured best ladder group (linear, with its tie set) against the
    closed-form prediction ``argmin_G ols_risk(oracle_G, p_G, N)`` (:func:`analysis.bias_variance.ols_risk`;
    ``oracle_G`` the risk of the G-invariant filter fitted on the whole pool = noise + bias b*eps, ``p_G`` the
    dimension of the G-invariant filters, ``N`` the training pixels), and the measured eps of the data's own
    group's next rung (from the ``measure`` rows)."""
    from analysis.bias_variance import ols_risk

    lin = frame[(frame["family"] == "linear") & frame["kappa"].notna()]
    if lin.empty:
        return pd.DataFrame()
    dec = decisions(lin).set_index(["dataset_name", "n_train"])
    t = summary(lin)
    kappas = lin.groupby("dataset_name")["kappa"].first()
    rows = []
    for (name, n), sub in t.groupby(["dataset_name", "n_train"], sort=False):
        sub = sub[sub["model"].astype(str).isin(LADDER)]
        pred = {str(r.model): ols_risk(r.oracle_risk, int(r.params), int(r.n_train_pixels)) for r in sub.itertuples()}
        predicted = min(pred, key=pred.get)
        d = dec.loc[(name, int(n))]
        tied = [m for m in str(d["tied"]).split(",") if m]
        rows.append(
            {
                "dataset_name": name,
                "kappa": float(kappas[name]),
                "n_train": int(n),
                "best": d["best"],
                "tied": ",".join(tied),
                "predicted": predicted,
                "agrees": predicted == d["best"] or predicted in tied,
            }
        )
    out = pd.DataFrame(rows).sort_values(["kappa", "n_train"]).reset_index(drop=True)
    meas = frame[frame["family"] == "measure"]
    if not meas.empty:
        eps = meas[meas["group"] == "rot8"].groupby("dataset_name")["eps"].first()
        out["eps_rot8"] = out["dataset_name"].map(eps)
    return out


def predictions(frame: pd.DataFrame) -> pd.DataFrame:
    """Item 5: per dataset and family, the group :func:`pick_group` chose from the measured eps, the best model at
    the largest training set, and whether the picked group's model has the lowest risk: ``picked - best`` with its
    paired interval (``within`` when the interval contains 0, i.e. the data cannot tell them apart)."""
    meas = frame[frame["family"] == "measure"]
    if meas.empty:
        return pd.DataFrame()
    picked = meas.groupby("dataset_name")["picked"].first()
    dec = decisions(frame)
    per_seed = seed_risks(frame)
    rows = []
    for (family, name), sub in dec.groupby(["family", "dataset_name"], sort=False):
        if name not in picked.index:
            continue
        last = sub.loc[sub["n_train"].idxmax()]
        pick = picked[name]
        seeds = per_seed[
            (per_seed["family"] == family)
            & (per_seed["dataset_name"] == name)
            & (per_seed["n_train"] == last["n_train"])
        ]
        if pick not in set(seeds["model"]):
            continue
        d = {"mean": 0.0, "low": 0.0, "high": 0.0} if pick == last["best"] else _diff(seeds, pick, last["best"])
        rows.append(
            {
                "family": family,
                "dataset_name": name,
                "data_symmetry": last["data_symmetry"],
                "n_train": int(last["n_train"]),
                "picked": pick,
                "best": last["best"],
                "picked_is_best": pick == last["best"],
                "best_risk": float(last["best_risk"]),
                "diff": d["mean"],
                "low": d["low"],
                "high": d["high"],
                "within": pick == last["best"] or not d["low"] > 0,
            }
        )
    return pd.DataFrame(rows)


def _dataset_order(frame: pd.DataFrame, config: dict) -> list[str]:
    names = [d["name"] for d in config["datasets"]]
    present = set(frame["dataset_name"])
    return [n for n in names if n in present]


_STYLES = {
    "risk": ("k", "o", "-", "risk"),
    "bias2": ("#4C72B0", "s", "-", "bias$^2$"),
    "variance": ("#DD8452", "^", "-", "variance"),
}


def linear_floor(frame: pd.DataFrame) -> dict[str, float]:
    """Per dataset, the test MSE of the plain linear filter fitted on the whole pool (the ``noise`` of linear rows)."""
    lin = frame[(frame["family"] == "linear") & frame["noise"].notna()]
    return lin.groupby("dataset_name")["noise"].mean().to_dict()


def _components_figure(frame: pd.DataFrame, config: dict, family: str):
    """Rows: datasets; columns: the smallest and largest training set. Risk, bias^2 (both minus the dataset's linear
    floor, so that 0 is the best linear filter) and variance against the model, in units of 1e-4."""
    from experiments.style import PALETTE, subplots

    t = summary(frame[(frame["family"] == family) & frame["kappa"].isna()])
    floors = linear_floor(frame)
    names = _dataset_order(t, config)
    sizes = sorted(t["n_train"].unique())
    shown = [sizes[0], sizes[-1]] if len(sizes) > 1 else sizes
    fig, axes = subplots(len(shown), len(names), width=3.1, height=2.2)
    unit = 1e-4
    for i, name in enumerate(names):
        floor = floors.get(name, 0.0)
        for j, n in enumerate(shown):
            ax = axes[i, j]
            sub = t[(t["dataset_name"] == name) & (t["n_train"] == n)]
            models = model_order(m for m in sub["model"].astype(str) if m in set(sub["model"].astype(str)))
            sub = sub.set_index(sub["model"].astype(str)).reindex(models)
            xs = np.arange(len(models))
            shift = {"risk": floor, "bias2": floor, "variance": 0.0}
            for comp, (color, marker, ls, label) in _STYLES.items():
                vals = (sub[comp].to_numpy(float) - shift[comp]) / unit
                ax.plot(xs, vals, color=color, marker=marker, ls=ls, label=label)
            ax.axhline(0.0, color=PALETTE[7], ls=":", lw=1, label="best linear filter (floor)")
            ladder = [k for k, m in enumerate(models) if m in LADDER]
            if ladder:
                k = ladder[int(np.nanargmin(sub["risk"].to_numpy(float)[ladder]))]
                best = (sub["risk"].iloc[k] - floor) / unit
                ax.plot(xs[k], best, marker="*", ms=12, color=PALETTE[3], ls="none", label="lowest risk (rotN ladder)")
            match = matched_model(str(sub["data_symmetry"].iloc[0]), models)
            if match in models:
                ax.axvline(models.index(match), color=PALETTE[2], ls="--", lw=1, label="group = data symmetry")
            ax.set_xticks(xs, models, rotation=45, ha="right", fontsize=7)
            ax.set_title(f"{name} ({sub['data_symmetry'].iloc[0]}), n={int(n)}", fontsize=9)
            if j == 0:
                ax.set_ylabel("MSE - floor (1e-4)" if floor else "MSE (1e-4)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes.flat:  # a panel without a matched group may lack that entry
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    seeds = int(frame.loc[frame["family"] == family, "n_seeds"].max())
    fig.suptitle(
        f"{family} denoisers: risk = bias$^2$ + variance over {seeds} seeds (disjoint training sets of n windows);\n"
        "risk and bias$^2$ are shown minus the test error of the best linear filter (0 = floor)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7)
    return fig


def _size_figure(frame: pd.DataFrame, config: dict, family: str):
    """Variance (top) and generalisation gap (bottom) against the training-set size, per dataset and model."""
    from matplotlib.ticker import NullFormatter

    from experiments.style import PALETTE, subplots

    t = summary(frame[(frame["family"] == family) & frame["kappa"].isna()])
    names = _dataset_order(t, config)
    fig, axes = subplots(len(names), 2, width=2.7, height=2.4)
    for i, name in enumerate(names):
        sub = t[t["dataset_name"] == name]
        order = model_order(sub["model"].astype(str))
        for model in order:
            s = sub[sub["model"].astype(str) == model].sort_values("n_train")
            kw = {"marker": "o", "color": PALETTE[order.index(model) % len(PALETTE)], "label": model}
            axes[0, i].plot(s["n_train"], s["variance"], **kw)
            axes[1, i].plot(s["n_train"], s["generalization_gap"], **kw)
        axes[0, i].set_yscale("log")
        axes[0, i].set_title(f"{name} ({sub['data_symmetry'].iloc[0]})")
        axes[1, i].axhline(0, color="k", lw=0.8)
        sizes = sorted(int(n) for n in sub["n_train"].unique())
        for ax in axes[:, i]:
            ax.set_xscale("log")
            ax.set_xticks(sizes, [str(n) for n in sizes])
            ax.xaxis.set_minor_formatter(NullFormatter())
        axes[1, i].set_xlabel("training windows n")
    axes[0, 0].set_ylabel("variance (test MSE per pixel)")
    axes[1, 0].set_ylabel("test - train MSE per pixel")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"{family} denoisers: variance and generalisation gap against the training-set size", fontsize=10)
    fig.tight_layout()
    return fig


def _phase_figure(frame: pd.DataFrame):
    """Heat maps over (kappa, n): the measured best ladder group (a star marks a decision not resolved at 95%: some
    other group's paired interval contains 0) and the closed-form prediction."""
    import seaborn as sns

    from experiments.style import subplots

    ph = phase(frame)
    codes = {m: i for i, m in enumerate(LADDER)}
    fig, axes = subplots(2, 1, width=4.2, height=3.2)
    cmap = sns.color_palette("viridis", len(LADDER))
    for ax, column, title in ((axes[0, 0], "best", "measured best group"), (axes[0, 1], "predicted", "predicted")):
        grid = ph.pivot(index="kappa", columns="n_train", values=column)
        label = grid.copy().astype(object)
        if column == "best":
            ties = ph.pivot(index="kappa", columns="n_train", values="tied")
            label = grid + ties.map(lambda t: "*" if t else "")
        sns.heatmap(
            grid.map(codes.get).astype(float),
            annot=label.to_numpy(),
            fmt="",
            cmap=cmap,
            vmin=-0.5,
            vmax=len(LADDER) - 0.5,
            cbar=False,
            ax=ax,
            annot_kws={"fontsize": 7},
        )
        ax.invert_yaxis()
        ax.set_xlabel("training windows n")
        ax.set_ylabel("kappa (larger = less rot8-symmetric)")
        ax.set_title(title)
    if "eps_rot8" in ph:
        eps = ph.groupby("kappa")["eps_rot8"].first()
        axes[0, 1].set_yticklabels([f"{k:g} (eps {1e3 * eps[k]:.2f}e-3)" for k in sorted(eps.index)], fontsize=7)
    agree = int(ph["agrees"].sum())
    fig.suptitle(
        f"eps sweep (kfold k=4 data): best linear group, * = tie within the 95% paired t interval; "
        f"prediction argmin sigma_G^2 (1 + p_G / (N - p_G - 1)) agrees in {agree}/{len(ph)} cells",
        fontsize=8,
    )
    fig.tight_layout()
    return fig


def _decisions_figure(frame: pd.DataFrame):
    """Paired differences with 95% t intervals: runner-up minus best, matched minus best, and every arm minus its
    constrained model, per (family, dataset, n). Intervals crossing 0 are decisions the seeds cannot make."""
    from experiments.style import PALETTE, subplots

    dec = decisions(frame[frame["kappa"].isna()])
    rows = []
    for r in dec.itertuples():
        tag, unit = f"{r.family} {r.dataset_name} n={r.n_train}", 100.0 / r.best_risk
        rows.append((f"{tag}: {r.runner_up} - {r.best}", r.diff * unit, r.low * unit, r.high * unit, 0))
        if isinstance(r.matched, str) and r.matched != r.best:
            what = f"{tag}: {r.matched} (matched) - {r.best}"
            rows.append((what, r.matched_diff * unit, r.matched_low * unit, r.matched_high * unit, 1))
        for name, (mean, low, high) in json.loads(r.arms).items():
            rows.append((f"{tag}: {name} - {arm(name)[1]}", mean * unit, low * unit, high * unit, 2))
    fig, axes = subplots(1, 1, width=7.0, height=max(3.0, 0.14 * len(rows)))
    ax = axes[0, 0]
    for i, (_, mean, low, high, kind) in enumerate(rows):
        ax.errorbar(mean, len(rows) - i, xerr=[[mean - low], [high - mean]], fmt="o", color=PALETTE[kind], ms=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks([len(rows) - i for i in range(len(rows))], [what for what, *_ in rows], fontsize=5)
    ax.set_xlabel("paired risk difference, % of the best model's risk (95% t interval over seeds)")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_title("every best-group decision with its interval (blue: runner-up, orange: matched, green: arms)")
    fig.tight_layout()
    return fig


def figures(frame: pd.DataFrame, config: dict) -> dict:
    """Per family: risk / bias^2 / variance against the model per dataset (``components``) and variance and
    generalisation gap against n (``size``); the eps x n phase diagram (``phase``); every decision's paired
    interval (``decisions``)."""
    figs = {}
    for family in ("linear", "cnn"):
        if (frame["family"] == family).any():
            figs[f"{family}-components"] = _components_figure(frame, config, family)
            if frame.loc[frame["family"] == family, "n_train"].nunique() > 1:
                figs[f"{family}-size"] = _size_figure(frame, config, family)
    if not phase(frame).empty:
        figs["phase"] = _phase_figure(frame)
    figs["decisions"] = _decisions_figure(frame)
    return figs


def _sci(x: float) -> str:
    return f"{x:.2e}"


def _interval(mean: float, low: float, high: float) -> str:
    return f"{_sci(mean)} [{_sci(low)}, {_sci(high)}]"


def training_text(frame: pd.DataFrame) -> str:
    """A clause on the CNN training, computed from the results: runs that met the convergence rule of
    :func:`train_network` (trained models only; ``avg:`` rows reuse the plain networks), the mean steps per model,
    the parameters and the forward FLOPs per window. Empty without CNN rows."""
    conv = frame[(frame["family"] == "cnn") & frame["converged_fraction"].notna()]
    if conv.empty:
        return ""
    trained = conv[~conv["model"].astype(str).str.startswith("avg:")]
    runs = trained["n_seeds"].sum()
    met = (trained["converged_fraction"] * trained["n_seeds"]).round().sum()
    t = summary(conv)
    steps = trained.groupby("model", sort=False)["steps_mean"].mean()
    per_model = trained.groupby("model", sort=False).apply(
        lambda g: f"{int((g['converged_fraction'] * g['n_seeds']).round().sum())}/{int(g['n_seeds'].sum())}",
        include_groups=False,
    )
    window = int(conv["window"].max())
    return (
        f"{int(met)}/{int(runs)} runs ({100 * met / runs:.0f}%) met the convergence rule (full "
        f"training loss falling by less than {conv['tol'].max():g} relative per {int(conv['check_every'].max())} "
        f"steps at the final learning rate, after {int(conv['decays'].max())} decays; cap "
        f"{int(conv['max_steps'].max())} steps): "
        + ", ".join(f"{m} {per_model[m]} in {steps[m]:.0f} steps" for m in model_order(steps.index))
        + "; parameters "
        + ", ".join(f"{m} {int(p)}" for m, p in t.groupby("model", observed=True)["params"].first().items())
        + f"; forward FLOPs per {window}x{window} window "
        + ", ".join(f"{m} {f:.3g}" for m, f in t.groupby("model", observed=True)["flops"].first().items())
        + "."
    )


def verdict(frame: pd.DataFrame, config: dict) -> str:
    """Sentences computed from the results: per family and dataset the best ladder group at every n with the
    paired runner-up interval (or the tie set), whether it is the matched group, the arms against the constrained
    model, the phase diagram's agreement with the closed form, and whether measured eps predicted the best group."""
    dec = decisions(frame[frame["kappa"].isna()])
    out = []
    for family in [f for f in ("linear", "cnn") if f in set(dec["family"])]:
        fam = dec[dec["family"] == family]
        known = fam[fam["matches"].notna()]
        resolved = known[known["resolved"]]
        out.append(
            f"{family}: the lowest mean risk is at the group matching the data's symmetry in "
            f"{int(known['matches'].sum())}/{len(known)} settings with known symmetry; "
            f"{int(resolved['matches'].sum())}/{len(known)} are matched AND resolved (every other ladder group's "
            f"95% paired t interval over {int(fam['n_seeds'].max())} seeds excludes 0)."
        )
        for r in fam.itertuples():
            text = f"  {family} {r.dataset_name} [{r.data_symmetry}] n={r.n_train}: best {r.best}"
            if r.resolved:
                text += f"; {r.runner_up} - {r.best} = {_interval(r.diff, r.low, r.high)}"
            else:
                text += f", tied with {r.tied.replace(',', ', ')} ({r.runner_up} - {r.best} = "
                text += f"{_interval(r.diff, r.low, r.high)})"
            if isinstance(r.matched, str) and r.matched != r.best:
                text += f"; matched {r.matched} - {r.best} = {_interval(r.matched_diff, r.matched_low, r.matched_high)}"
            for name, (mean, low, high) in json.loads(r.arms).items():
                text += f"; {name} - {arm(name)[1]} = {_interval(mean, low, high)}"
            out.append(text + ".")
        if family == "cnn" and training_text(frame):
            out.append(f"  cnn training: {training_text(frame)}")
    ph = phase(frame)
    if not ph.empty:
        out.append(
            f"eps sweep (linear, kfold k=4 over kappa {', '.join(f'{k:g}' for k in sorted(ph['kappa'].unique()))} "
            f"x n {', '.join(str(n) for n in sorted(ph['n_train'].unique()))}): the closed-form prediction "
            f"names the measured best group or one tied with it in {int(ph['agrees'].sum())}/{len(ph)} cells; "
            f"resolved cells {int((ph['tied'] == '').sum())}/{len(ph)}."
        )
    pr = predictions(frame[frame["kappa"].isna()])
    if not pr.empty:
        for family in [f for f in ("linear", "cnn") if f in set(pr["family"])]:
            sub = pr[pr["family"] == family]
            items = []
            for r in sub.itertuples():
                item = f"{r.dataset_name}: measured {r.picked}, best {r.best}"
                if not r.picked_is_best:
                    item += f" ({r.picked} - {r.best} = {_interval(r.diff, r.low, r.high)})"
                items.append(item)
            out.append(
                f"measured eps -> group ({family}, largest n): the picked group's model has the lowest risk in "
                f"{int(sub['picked_is_best'].sum())}/{len(sub)} datasets and is within the 95% interval of the "
                f"best in {int(sub['within'].sum())}/{len(sub)}: " + "; ".join(items) + "."
            )
    return "\n".join(out)


def _pct(value: float, base: float) -> str:
    return f"{100 * value / base:+.3f}%"


def readme_paragraph(frame: pd.DataFrame, config: dict) -> str:
    """The README's bias-variance paragraph, computed from the results: at the largest n of every (family, dataset)
    the best ladder group with the paired 95% t interval of runner-up (or matched) minus best in % of the best
    risk, the arms, the phase diagram's agreement with the closed form, and the measured-eps prediction."""
    dec = decisions(frame[frame["kappa"].isna()])
    parts = []
    for family in [f for f in ("linear", "cnn") if f in set(dec["family"])]:
        fam = dec[dec["family"] == family]
        items = []
        for name, sub in fam.groupby("dataset_name", sort=False):
            r = sub.loc[sub["n_train"].idxmax()]
            base = r["best_risk"]
            text = f"{name} [{r['data_symmetry']}] n={r['n_train']}: {r['best']}"
            text += f" ({r['runner_up']} {_pct(r['diff'], base)} [{_pct(r['low'], base)}, {_pct(r['high'], base)}]"
            if isinstance(r["matched"], str) and r["matched"] != r["best"]:
                text += (
                    f"; matched {r['matched']} {_pct(r['matched_diff'], base)} "
                    f"[{_pct(r['matched_low'], base)}, {_pct(r['matched_high'], base)}]"
                )
            text += ")" if r["resolved"] else f"; tied with {r['tied'].replace(',', ', ')})"
            items.append(text)
        known = fam[fam["matches"].notna()]
        resolved = known[known["resolved"] & known["matches"].astype(bool)]
        arms = {}
        for r in fam.itertuples():
            for name, (_, low, high) in json.loads(r.arms).items():
                arms.setdefault(name, []).append((low > 0) - (high < 0))
        arm_text = ", ".join(
            f"{name} vs {arm(name)[1]}: worse in {v.count(1)}, better in {v.count(-1)}, tied in {v.count(0)} "
            f"of {len(v)}"
            for name, v in sorted(arms.items())
        )
        parts.append(
            f"*{family}* ({int(fam['n_seeds'].max())} seeds; best group, then runner-up or matched minus best in % of "
            f"the best risk with its 95% paired t interval): the lowest mean risk is at the matched group in "
            f"{int(known['matches'].sum())}/{len(known)} (dataset, n) settings of known symmetry, resolved "
            f"(every other group's interval excludes 0) in {len(resolved)}; at the largest n: "
            + "; ".join(items)
            + f". Arms (paired intervals): {arm_text}."
            + (f" Training: {training_text(frame)}" if family == "cnn" and training_text(frame) else "")
        )
    ph = phase(frame)
    if not ph.empty:
        parts.append(
            f"*Phase diagram* (kfold k=4, kappa {', '.join(f'{k:g}' for k in sorted(ph['kappa'].unique()))} x n): "
            f"the closed form names the best linear group or one tied with it in {int(ph['agrees'].sum())}/{len(ph)} "
            f"cells; {int((ph['tied'] == '').sum())}/{len(ph)} cells are resolved."
        )
    pr = predictions(frame[frame["kappa"].isna()])
    if not pr.empty:
        for family in [f for f in ("linear", "cnn") if f in set(pr["family"])]:
            sub = pr[pr["family"] == family]
            picks = ", ".join(
                f"{r.dataset_name} {r.picked}"
                + (
                    " (= best)"
                    if r.picked_is_best
                    else f" (best {r.best}; {r.picked} - {r.best} {_pct(r.diff, r.best_risk)} "
                    f"[{_pct(r.low, r.best_risk)}, {_pct(r.high, r.best_risk)}])"
                )
                for r in sub.itertuples()
            )
            hits, within = int(sub["picked_is_best"].sum()), int(sub["within"].sum())
            parts.append(
                f"*Measured eps -> group* ({family}): the picked group is the best in {hits}/{len(sub)} datasets "
                f"and within the best's interval in {within}/{len(sub)}: {picks}."
            )
    return " ".join(parts)
