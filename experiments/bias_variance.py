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
- ``cnn``: the analysis networks (:func:`analysis.models.build_model`: plain, equivariant rotN, sa) trained briefly
  with tiny widths on the same training sets; seeds differ in data and initialisation, so their variance includes the
  optimiser's. Their irreducible error is unknown: ``bias2`` includes it.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from experiments.runner import Context, SkipCell
from symmetry.errors import UsageError

LADDER = ["plain", "rot2", "rot4", "rot8", "rot16"]
"""Models ordered by increasing equivariance (each group contains the previous one); ``sa`` is plotted after them."""
MODEL_ORDER = [*LADDER, "sa"]
SYMMETRY_ORDERS = {"none": 1, "rot2": 2, "rot4": 4, "rot8": 8, "rot16": 16, "so2": math.inf}
_DATA_KEYS = ("window", "radius", "sigma", "signal_std", "pool_windows", "test_windows", "data_seed", "max_images")


# ---- configuration -> cells ----------------------------------------------------------------


def cells(config: dict) -> list[dict]:
    """One cell per (family, dataset, model, training-set size); each cell fits every seed (the decomposition needs
    them all)."""
    data = {k: config[k] for k in _DATA_KEYS}
    seeds = list(config["seeds"])
    out = []
    for ds in config["datasets"]:
        dataset = {"name": ds["name"], "spec": ds["spec"], "symmetry": ds["symmetry"]}
        lin = config["linear"]
        for model in lin["models"]:
            for n in lin["n_train"]:
                cell = {
                    "family": "linear",
                    "dataset": dataset,
                    "model": model,
                    "n_train": n,
                    "block": max(lin["n_train"]),
                }
                cell.update(data, seeds=seeds, sa_group=lin["sa_group"], angle_step=lin["angle_step"])
                out.append(cell)
    cnn = config.get("cnn")
    if cnn:
        for ds in config["datasets"]:
            if ds["name"] not in cnn["datasets"]:
                continue
            dataset = {"name": ds["name"], "spec": ds["spec"], "symmetry": ds["symmetry"]}
            for model in cnn["models"]:
                for n in cnn["n_train"]:
                    cell = {"family": "cnn", "dataset": dataset, "model": model, "n_train": n}
                    cell.update(data, block=max(config["linear"]["n_train"]))
                    cell.update(
                        {k: cnn[k] for k in ("width", "depth", "kernel_size", "steps", "lr", "batch_size", "crop")}
                    )
                    cell.update(seeds=list(cnn["seeds"]), sa_group=cnn["sa_group"], plain_match=cnn["plain_match"])
                    out.append(cell)
    return out


# ---- data -----------------------------------------------------------------------------------


def _tiles(image: torch.Tensor, window: int) -> torch.Tensor:
    """Non-overlapping ``window x window`` tiles of a ``(1, H, W)`` image: ``(K, window, window)``."""
    img = image[0]
    h, w = (img.shape[0] // window) * window, (img.shape[1] // window) * window
    t = img[:h, :w].reshape(h // window, window, w // window, window).permute(0, 2, 1, 3)
    return t.reshape(-1, window, window)


def _images(spec: str, split: str, count: int | None, data_root: str | None) -> list[torch.Tensor]:
    """Clean gray ``(1, H, W)`` float64 images of a dataset split (``count`` images for synthetic data)."""
    from analysis.tasks import load_items

    data = f"{spec},n={count}" if spec.startswith("synthetic") and count else spec
    items = load_items("denoise", data, split=split, data_root=data_root, channels="gray", max_images=count)
    return [it.target.to(torch.float64) for it in items]


def _split_seed(data_seed: int, split: str) -> int:
    return int(np.random.default_rng([data_seed, {"train": 1, "test": 2}[split]]).integers(0, 2**62))


@lru_cache(maxsize=8)
def _pools(spec: str, key: tuple, data_root: str | None) -> dict[str, torch.Tensor]:
    """Clean and noisy training pool and test set, ``(N, window, window)`` float64 (cached per process)."""
    p = dict(key)
    window = p["window"]
    synthetic = spec.startswith("synthetic")
    out: dict[str, torch.Tensor] = {}
    for split, want in (("train", p["pool_windows"]), ("test", p["test_windows"])):
        if synthetic:
            from symmetry.synthetic import DEFAULTS, parse_spec

            size = int(parse_spec(spec)[1].get("size", DEFAULTS["size"]))
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
    return prep


def _prepare(cell: dict, ctx: Context) -> dict[str, torch.Tensor]:
    return _prepared(cell["dataset"]["spec"], _data_key(cell), _data_root(cell, ctx))


def linear_basis(model: str, radius: int, sa_group: str, angle_step: float) -> torch.Tensor:
    """The filters a linear model may use: G-invariant (``rotN``), all (``plain``), or for ``sa`` the
    ``sa_group``-invariant filters that interpolated rotations keep (:func:`analysis.bias_variance.rotatable_basis`)."""
    from analysis.bias_variance import invariant_basis, rotatable_basis

    if model == "sa":
        return rotatable_basis(radius, sa_group, angle_step)
    return invariant_basis(radius, model)


def _fit(cell: dict, prep: dict, index: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Least-squares filter on the training samples ``index`` of the pool (per-sample rotations for ``sa``)."""
    from analysis.bias_variance import fit_filter, normal_equations, rotation_operators

    ops = None
    if cell["model"] == "sa":
        ops = rotation_operators(cell["radius"], prep["train_angles"][index], cell["angle_step"])
    a, b, _ = normal_equations(prep["train_noisy"][index], prep["train_clean"][index], cell["radius"], ops)
    return fit_filter(a, b, basis)


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
        noisy = prep["train_noisy"][idx]
        patches = patch_vectors(noisy, r).reshape(len(idx), -1, basis.shape[0])
        fitted = _apply(cell, w[None], patches, prep["train_angles"][idx])[0]
        train_risks.append(
            float((fitted - interior(prep["train_clean"][idx], r).reshape(len(idx), -1)).square().mean())
        )
        weights.append(w)
    preds = _apply(cell, torch.stack(weights), prep["test_patches"], prep["test_angles"])
    oracle = (cell["dataset"]["spec"], _data_key(cell), _data_root(cell, ctx))
    return {
        "preds": preds,
        "targets": prep["test_target"],
        "train_risks": train_risks,
        "noise": _oracle(*oracle, "plain", cell["sa_group"], cell["angle_step"]),
        "oracle_risk": _oracle(*oracle, cell["model"], cell["sa_group"], cell["angle_step"]),
        "params": int(basis.shape[1]),
        "pools": prep,
    }


# ---- network family ---------------------------------------------------------------------------


def build_network(cell: dict) -> torch.nn.Module:
    """The analysis network of a ``cnn`` cell: ``plain`` (width matched to ``plain_match``), ``rotN`` or ``sa``."""
    from analysis.models import build_model

    common = dict(in_channels=1, width=cell["width"], depth=cell["depth"], kernel_size=cell["kernel_size"])
    model = cell["model"]
    if model == "plain":
        return build_model("plain", group=cell["plain_match"], **common)
    if model == "sa":
        return build_model("sa", group=cell["sa_group"], **common)
    return build_model("equivariant", group=model, **common)


def _predict(net: torch.nn.Module, noisy: torch.Tensor, radius: int, device: torch.device, batch: int = 64):
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, noisy.shape[0], batch):
            x = noisy[start : start + batch, None].to(device, torch.float32)
            out.append(net(x)[:, 0, radius:-radius, radius:-radius].double().cpu())
    return torch.cat(out)


def train_network(cell: dict, seed: int, noisy: torch.Tensor, clean: torch.Tensor, device: torch.device):
    """A short Adam run (:func:`analysis.fit.fit`) on one seed's fixed training pairs: random ``crop x crop`` crops
    of its windows, MSE on the crop minus the ``radius`` margin, cosine learning rate. Initialisation and batches
    come from the named streams ``init`` and ``batches`` of ``seed`` (batch ``k`` from ``(seed, "batches", k)``)."""
    from analysis.fit import fit, loss_fn
    from symmetry.streams import rng, seed_of

    r, crop, window = cell["radius"], cell["crop"], cell["window"]
    if not 2 * r < crop <= window:
        raise UsageError(f"crop {crop} must exceed 2 * radius ({2 * r}) and be at most the window ({window})")
    torch.manual_seed(seed_of(seed, "init"))
    net = build_network(cell).to(device)
    x_all = noisy[:, None].to(device, torch.float32)
    y_all = clean[:, None].to(device, torch.float32)
    size = min(cell["batch_size"], x_all.shape[0])

    def batches(k: int):
        draw = rng(seed, "batches", k)
        idx = torch.from_numpy(draw.choice(x_all.shape[0], size, replace=False)).to(device)
        top, left = (int(v) for v in draw.integers(0, window - crop + 1, 2))
        x = x_all[idx, :, top : top + crop, left : left + crop]
        y = y_all[idx, :, top + r : top + crop - r, left + r : left + crop - r]
        return x, y

    def step(model: torch.nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return loss_fn("l2", model(x)[..., r:-r, r:-r], y)

    fit(net, step, batches, steps=cell["steps"], lr=cell["lr"], schedule="cosine", device=device)
    return net


def run_cnn(cell: dict, ctx: Context) -> dict:
    from analysis.bias_variance import interior
    from analysis.models import count_parameters

    pools = load_pools(cell, ctx)
    r = cell["radius"]
    preds, train_risks, params = [], [], 0
    for seed in cell["seeds"]:
        idx = torch.from_numpy(seed_subset(seed, cell["n_train"], cell["block"], pools["train_clean"].shape[0]))
        noisy, clean = pools["train_noisy"][idx], pools["train_clean"][idx]
        net = train_network(cell, seed, noisy, clean, ctx.device)
        params = count_parameters(net)
        train_risks.append(float((_predict(net, noisy, r, ctx.device) - interior(clean, r)).square().mean()))
        preds.append(_predict(net, pools["test_noisy"], r, ctx.device))
    return {
        "preds": torch.stack(preds),
        "targets": interior(pools["test_clean"], r),
        "train_risks": train_risks,
        "noise": None,
        "oracle_risk": math.nan,
        "params": params,
        "pools": pools,
    }


# ---- one cell -----------------------------------------------------------------------------------


def run_cell(cell: dict, ctx: Context) -> list[dict]:
    """Fit the cell's model on every seed's training set and decompose its test error into bias^2 and variance."""
    from analysis.bias_variance import decompose, interior

    if cell["family"] not in ("linear", "cnn"):
        raise UsageError(f"unknown model family {cell['family']!r}")
    out = run_linear(cell, ctx) if cell["family"] == "linear" else run_cnn(cell, ctx)
    pools, r = out["pools"], cell["radius"]
    target = interior(pools["test_clean"], r)
    parts = decompose(out["preds"], out["targets"], noise=out["noise"])
    train_risk = float(np.mean(out["train_risks"]))
    return [
        {
            "dataset_name": cell["dataset"]["name"],
            "data_symmetry": cell["dataset"]["symmetry"],
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
            "params": out["params"],
            "n_train_pixels": cell["n_train"] * (cell["window"] - 2 * r) ** 2,
            "n_seeds": parts["n_seeds"],
            "n_test_values": parts["n_values"],
            "device": str(ctx.device) if cell["family"] == "cnn" else "cpu",
        }
    ]


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


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (family, dataset, n_train, model) in the ladder order, with the decomposition's columns."""
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
    ]
    keys = ["family", "dataset_name", "data_symmetry", "n_train", "model"]
    t = frame.groupby(keys, sort=False)[cols].mean().reset_index()
    t["model"] = pd.Categorical(t["model"], MODEL_ORDER, ordered=True)
    return t.sort_values(["family", "dataset_name", "n_train", "model"]).reset_index(drop=True)


def minima(frame: pd.DataFrame) -> pd.DataFrame:
    """Where the risk is smallest on the ladder (and overall, sa included) per (family, dataset, n_train)."""
    rows = []
    for (family, name, sym, n), sub in summary(frame).groupby(
        ["family", "dataset_name", "data_symmetry", "n_train"], sort=False, observed=True
    ):
        ladder = sub[sub["model"].astype(str).isin(LADDER)]
        if ladder.empty:
            continue
        best = ladder.loc[ladder["risk"].idxmin()]
        overall = sub.loc[sub["risk"].idxmin()]
        match = matched_model(sym, ladder["model"].astype(str))
        rows.append(
            {
                "family": family,
                "dataset_name": name,
                "data_symmetry": sym,
                "n_train": n,
                "best_ladder": str(best["model"]),
                "best_risk": best["risk"],
                "matched": match,
                "matches": None if match is None else str(best["model"]) == match,
                "best_overall": str(overall["model"]),
                "sa_vs_best_ladder": (
                    float(sub[sub["model"].astype(str) == "sa"]["risk"].iloc[0] / best["risk"] - 1)
                    if (sub["model"].astype(str) == "sa").any()
                    else math.nan
                ),
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

    t = summary(frame[frame["family"] == family])
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
            models = [m for m in MODEL_ORDER if m in set(sub["model"].astype(str))]
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
            ax.set_xticks(xs, models)
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

    t = summary(frame[frame["family"] == family])
    names = _dataset_order(t, config)
    fig, axes = subplots(len(names), 2, width=2.7, height=2.4)
    for i, name in enumerate(names):
        sub = t[t["dataset_name"] == name]
        for model in (m for m in MODEL_ORDER if m in set(sub["model"].astype(str))):
            s = sub[sub["model"].astype(str) == model].sort_values("n_train")
            kw = {"marker": "o", "color": PALETTE[MODEL_ORDER.index(model)], "label": model}
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


def figures(frame: pd.DataFrame, config: dict) -> dict:
    """Per family: risk / bias^2 / variance against the model's group per dataset (``components``), and variance and
    generalisation gap against the training-set size (``size``)."""
    figs = {}
    for family in ("linear", "cnn"):
        if (frame["family"] == family).any():
            figs[f"{family}-components"] = _components_figure(frame, config, family)
            figs[f"{family}-size"] = _size_figure(frame, config, family)
    return figs


def _runs(pairs: list[tuple[int, str]]) -> str:
    """``[(1, 'rot16'), (4, 'rot16'), (16, 'rot2')]`` -> ``'n=1,4: rot16, n=16: rot2'``."""
    out: list[tuple[list[int], str]] = []
    for n, model in pairs:
        if out and out[-1][1] == model:
            out[-1][0].append(n)
        else:
            out.append(([n], model))
    return ", ".join(f"n={','.join(str(n) for n in ns)}: {m}" for ns, m in out)


def verdict(frame: pd.DataFrame, config: dict) -> str:
    """Where the risk minimum on the rotN ladder fell per family, dataset and training-set size; whether it is the
    group matching the data's symmetry (with the matched model's excess risk where it is not); and how sa compares."""
    m = minima(frame)
    t = summary(frame)
    parts = []
    for family in [f for f in ("linear", "cnn") if f in set(m["family"])]:
        fam = m[m["family"] == family]
        known = fam[fam["matches"].notna()]
        text = [f"{family}: minimum at the matched group in {int(known['matches'].sum())}/{len(known)} settings"]
        for name, sub in fam.groupby("dataset_name", sort=False):
            sub = sub.sort_values("n_train")
            pairs = [(int(r.n_train), r.best_ladder) for r in sub.itertuples()]
            item = f"{name} [{sub['data_symmetry'].iloc[0]}] {_runs(pairs)}"
            last = sub.iloc[-1]
            if isinstance(last["matched"], str) and not bool(last["matches"]):
                risk = t[(t["family"] == family) & (t["dataset_name"] == name) & (t["n_train"] == last["n_train"])]
                matched = float(risk.loc[risk["model"].astype(str) == last["matched"], "risk"].iloc[0])
                item += f" ({last['matched']} +{100 * (matched / last['best_risk'] - 1):.2f}%)"
            text.append(item)
        largest = fam.loc[fam.groupby("dataset_name")["n_train"].idxmax()]
        sa = largest["sa_vs_best_ladder"].dropna()
        if len(sa):
            text.append(
                f"sa vs best ladder model at the largest n: {100 * sa.min():+.1f}% .. {100 * sa.max():+.1f}% "
                f"(below it on {int((sa < 0).sum())}/{len(sa)} datasets)"
            )
        parts.append("; ".join(text))
    return " | ".join(parts)
