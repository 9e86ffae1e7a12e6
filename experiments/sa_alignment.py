"""``sa_alignment``: does SA-Conv's hypernetwork predict the transformation that aligns each image with G?

theory.md, section 3: SA-Conv evaluates its filters on the mesh deformed by a per-sample ``D_w = R(theta0)
diag(cx, cy)`` predicted by a hypernetwork, so the network is equivariant to ``D_w G D_w^-1``: it should pick the
``D_w`` that makes the aligned image ``pi_D^-1 x`` G-symmetric. Section 4 (last point) defines that per-sample
target: each image's best-aligning transformation (:func:`symmetry.alignment.best_alignment`).

Data: (1) ``synthetic:deformed`` (:mod:`symmetry.synthetic`): rot4-symmetric motif fields seen through a known
per-image ``D_n = R(theta_n) diag(cx_n, cy_n)``, so the truth is known; (2) Rain100L's clean photographs (no
truth; skipped when absent). One cell per (dataset, seed): train ``sa`` (``analysis.models.build_model``) to
denoise (Gaussian noise ``sigma`` in 0-255 units) briefly at tiny width on random crops, then, per held-out image,
compare the hypernetwork's ``(theta0, cx, cy)`` (``model.predict_transform`` on the noisy image) with the truth and
with the image's best alignment (covariance distance; the per-image kernel MMD on a few images as well).

What is comparable. Only the stretch ``D D^T`` up to scale is identifiable (``symmetry.alignment``): the angle of
the stretch axes modulo ``2 pi / N = pi / 2`` (rot4), with ``log(cx / cy)`` changing sign per quarter turn, and
the log-ratio ``log(cx / cy)``. Angles are compared by the circular correlation of ``theta0`` modulo ``pi / 2``;
log-ratios by Pearson's r after moving each estimate to the representative nearest to the reference angle
(:func:`symmetry.alignment.match_to`). A near-constant prediction makes a circular correlation meaningless, so the
spread (circular standard deviation) of the predicted angles is reported beside it.

Controls: does the loss reward the right transform? The same network is retrained (same seed, data and steps) with
the hypernetwork replaced by a fixed per-image transform (``model(x, transform=...)``) and scored on the same test
images (``psnr_{control}`` columns): ``identity`` (``D = I``: the equivariant network), ``truth`` (each image's
known ``D_n``), ``truth_scaled`` (``D_n`` times the isotropic scale ``sqrt(cx cy)`` the hypernetwork learned on
average) and ``learned_mean`` (the hypernetwork's mean prediction over the test images, the same for every image).
If ``truth`` does not beat ``identity``, denoising gives the hypernetwork no reason to learn per-image transforms.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from experiments.runner import Context, SkipCell
from symmetry.errors import UsageError

DATASETS = ("synthetic", "rain100l")
MODEL_KEYS = ("group", "sigma", "width", "depth", "kernel_size", "hyper_width", "steps", "batch_size", "patch", "lr")
ALIGN_KEYS = ("radius", "max_log_ratio", "angles", "scales", "refine", "mmd_images", "mmd_windows")
LEARNED_R = 0.5
"""A hypernetwork 'learned' the per-image transform when both correlations with the truth exceed this ..."""
LEARNED_SPREAD_DEG = 5.0
"""... and its predicted angles spread by more than this (degrees, circular standard deviation)."""
CONTROLS = ("identity", "truth", "truth_scaled", "learned_mean")
"""Fixed transforms the network is retrained with (see the module docstring); ``truth*`` need a known truth."""


def cells(config: dict) -> list[dict]:
    """One cell per (dataset, seed) holding the model, training, alignment and dataset parameters."""
    shared = {k: config[k] for k in MODEL_KEYS + ALIGN_KEYS}
    out = []
    for name in config["datasets"]:
        data = dict(config[name])
        unknown = set(data.get("controls", [])) - set(CONTROLS)
        if unknown:
            raise UsageError(f"unknown sa_alignment control(s) {sorted(unknown)}; choose from {', '.join(CONTROLS)}")
        for seed in config["seeds"]:
            out.append({"dataset": name, **data, **shared, "seed": seed})
    return out


# ---- data -----------------------------------------------------------------------------------------


def _synthetic(cell: dict):
    """Training and test rasters ``(N, 1, H, W)`` scaled to pixel std ``signal_std``, test sources, test and
    training truths.

    Values below ``1e-30`` (far from every atom) are set to 0: as float32 subnormals they slow CPU convolutions
    several fold.
    """
    from symmetry.data import ImageSource
    from symmetry.synthetic import load_synthetic

    fields = {split: list(load_synthetic(cell["spec"], split=split)) for split in ("train", "test")}
    rasters = {}
    for split, count in (("train", cell["train_images"]), ("test", cell["test_images"])):
        x = torch.stack([f.at_mesh(1.0) for f in fields[split][:count]])
        rasters[split] = torch.where(x.abs() < 1e-30, torch.zeros_like(x), x)
    scale = cell["signal_std"] / float(rasters["train"].std())
    test = fields["test"][: cell["test_images"]]
    sources = [ImageSource(f.name, array=x) for f, x in zip(test, rasters["test"])]
    train_truths = [f.meta for f in fields["train"][: cell["train_images"]]]
    return list(rasters["train"] * scale), rasters["test"] * scale, sources, [f.meta for f in test], train_truths


def _rain100l(cell: dict, ctx: Context):
    """Gray clean Rain100L images: whole training images, centre crops of the test images, and the test sources."""
    from symmetry.data import ImageSource, load_dataset

    if not ctx.data_available("rain100l"):
        raise SkipCell(f"rain100l not found under {ctx.data_root}; pass --data-root")
    train = list(load_dataset("rain100l", data_root=ctx.data_root, split="train", channels="gray"))
    test = list(load_dataset("rain100l", data_root=ctx.data_root, split="test", channels="gray"))
    xtr = [s.load() for s in train[: cell["train_images"]]]
    crop, crops, sources = cell["crop"], [], []
    for s in test[: cell["test_images"]]:
        img = s.load()
        top, left = (img.shape[-2] - crop) // 2, (img.shape[-1] - crop) // 2
        c = img[:, top : top + crop, left : left + crop]
        crops.append(c)
        sources.append(ImageSource(s.name, array=c))
    return xtr, torch.stack(crops), sources, [{} for _ in sources], [{} for _ in xtr]


# ---- model ----------------------------------------------------------------------------------------


def train_sa(cell: dict, images: list[torch.Tensor], device: torch.device, transforms: torch.Tensor | None = None):
    """A short Adam run (:func:`analysis.fit.fit`, cosine learning rate) on random ``patch`` crops of clean images
    with fresh noise; returns the network (eval mode) and the per-step losses.

    ``transforms`` ``(len(images), 3)``: a fixed ``(theta0, cx, cy)`` per image replacing the hypernetwork.
    Initialisation, crops and noise come from the named streams ``init``, ``batches`` and ``noise`` of the seed
    (step ``k`` from ``(seed, stream, k)``).
    """
    from analysis.fit import fit, loss_fn
    from analysis.models import build_model
    from symmetry.streams import rng, seed_of, torch_generator

    seed = cell["seed"]
    torch.manual_seed(seed_of(seed, "init"))
    net = build_model(
        "sa",
        group=cell["group"],
        in_channels=1,
        width=cell["width"],
        depth=cell["depth"],
        kernel_size=cell["kernel_size"],
        hyper_width=cell["hyper_width"],
    ).to(device)
    p, sigma = cell["patch"], cell["sigma"] / 255.0
    images = [x.to(device, torch.float32) for x in images]
    if transforms is not None:
        transforms = transforms.to(device, torch.float32)

    def batches(k: int):
        draw = rng(seed, "batches", k)
        index = draw.integers(0, len(images), cell["batch_size"])
        crops = []
        for i in index:
            h, w = images[i].shape[-2:]
            top, left = int(draw.integers(0, h - p + 1)), int(draw.integers(0, w - p + 1))
            crops.append(images[i][:, top : top + p, left : left + p])
        clean = torch.stack(crops)
        noise = torch.randn(clean.shape, generator=torch_generator(seed, "noise", k, device=device), device=device)
        return clean + sigma * noise, clean, torch.from_numpy(index)

    def step(model: torch.nn.Module, batch) -> torch.Tensor:
        noisy, clean, index = batch
        out = model(noisy) if transforms is None else model(noisy, transform=transforms[index.to(device)])
        return loss_fn("l2", out, clean)

    result = fit(net, step, batches, steps=cell["steps"], lr=cell["lr"], schedule="cosine", device=device)
    net.eval()
    return net, result.losses


def control_transforms(control: str, pred: np.ndarray, train_truths: list[dict], test_truths: list[dict]):
    """The fixed ``(theta0, cx, cy)`` of a control for the training and the test images, or ``None`` if it needs a
    truth the dataset lacks. ``pred``: the hypernetwork's predictions on the test images ``(N, 3)``."""

    def truth(metas: list[dict], scale: float = 1.0) -> np.ndarray:
        return np.array([[m["theta"], scale * m["cx"], scale * m["cy"]] for m in metas])

    def same(row: np.ndarray, count: int) -> np.ndarray:
        return np.repeat(row[None], count, axis=0)

    has_truth = all("theta" in m for m in train_truths + test_truths)
    if control == "identity":
        row = np.array([0.0, 1.0, 1.0])
        return same(row, len(train_truths)), same(row, len(test_truths))
    if control == "learned_mean":
        row = pred.mean(axis=0)
        return same(row, len(train_truths)), same(row, len(test_truths))
    if not has_truth:
        return None
    scale = float(np.sqrt(pred[:, 1] * pred[:, 2]).mean()) if control == "truth_scaled" else 1.0
    return truth(train_truths, scale), truth(test_truths, scale)


def _psnr(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    mse = (x - y).double().square().flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse)).cpu().numpy()


def run_cell(cell: dict, ctx: Context) -> list[dict]:
    """Train ``sa``, predict each test image's transform, align each test image, and return one row per image."""
    from symmetry.alignment import AlignmentSettings, best_alignment, deformation, make_aligner
    from symmetry.groups import get_group
    from symmetry.streams import torch_generator

    if cell["dataset"] == "synthetic":
        train, test, sources, truths, train_truths = _synthetic(cell)
    else:
        train, test, sources, truths, train_truths = _rain100l(cell, ctx)
    device = ctx.device
    net, losses = train_sa(cell, train, device)
    gen = torch_generator(cell["seed"], "noise", device=device)  # test noise: the stream without a step key
    clean = test.to(device, torch.float32)
    noisy = clean + cell["sigma"] / 255.0 * torch.randn(clean.shape, generator=gen, device=device)
    with torch.no_grad():
        pred = net.predict_transform(noisy).double().cpu().numpy()
        out = net(noisy)
    psnr_in, psnr_out = _psnr(noisy, clean), _psnr(out, clean)
    controls = {}
    for control in cell.get("controls", []):
        fixed = control_transforms(control, pred, train_truths, truths)
        if fixed is None:
            continue
        control_net, _ = train_sa(cell, train, device, torch.as_tensor(fixed[0]))
        with torch.no_grad():
            controls[f"psnr_{control}"] = _psnr(control_net(noisy, transform=torch.as_tensor(fixed[1])), clean)

    mesh = cell.get("mesh", 1.0)
    settings = {k: cell[k] for k in ("radius", "max_log_ratio", "angles", "scales", "refine")}
    align = best_alignment(sources, cell["group"], mesh, device=device, seed=cell["seed"], **settings)
    mmd = None
    if cell["mmd_images"] > 0:
        mmd = best_alignment(
            sources[: cell["mmd_images"]],
            cell["group"],
            mesh,
            device=device,
            seed=cell["seed"],
            distance="mmd",
            windows=cell["mmd_windows"],
            **settings,
        )
    rows = []
    group = get_group(cell["group"])
    for i, src in enumerate(sources):
        a = align.iloc[i]
        row = {
            "image": src.name,
            "pred_theta0": pred[i, 0],
            "pred_cx": pred[i, 1],
            "pred_cy": pred[i, 2],
            "pred_log_ratio": math.log(pred[i, 1] / pred[i, 2]),
            "align_theta0": a["theta0"],
            "align_cx": a["cx"],
            "align_cy": a["cy"],
            "align_log_ratio": a["log_ratio"],
            "self_symmetry_error": a["self_symmetry_error"],
            "aligned_error": a["aligned_error"],
            "mmd_theta0": mmd.iloc[i]["theta0"] if mmd is not None and i < len(mmd) else math.nan,
            "mmd_log_ratio": mmd.iloc[i]["log_ratio"] if mmd is not None and i < len(mmd) else math.nan,
            "truth_theta0": math.nan,
            "truth_log_ratio": math.nan,
            "truth_error": math.nan,
            "psnr_input": psnr_in[i],
            "psnr_output": psnr_out[i],
            "final_loss": float(np.mean(losses[-max(1, len(losses) // 10) :])),
            **{f"psnr_{c}": controls[f"psnr_{c}"][i] if f"psnr_{c}" in controls else math.nan for c in CONTROLS},
        }
        truth = truths[i]
        if "theta" in truth:
            aligner = make_aligner(src, group, mesh, AlignmentSettings(**settings), device=device)
            err = aligner.errors(deformation([truth["theta"]], [truth["cx"]], [truth["cy"]]))[0, 1:]
            row.update(truth_theta0=truth["theta"], truth_log_ratio=truth["log_ratio"], truth_error=float(err.max()))
        rows.append(row)
    return rows


# ---- analysis -------------------------------------------------------------------------------------

PERIOD = math.pi / 2
"""Angles are compared modulo 2 pi / N for rot4 (``symmetry.alignment.angle_period``)."""


def _circular_std_deg(theta: np.ndarray, period: float = PERIOD) -> float:
    r = abs(np.exp(2j * math.pi * theta / period).mean())
    return math.degrees(math.sqrt(max(-2 * math.log(max(r, 1e-300)), 0.0)) * period / (2 * math.pi))


def compare(frame: pd.DataFrame, estimate: str, reference: str, period: float = PERIOD) -> dict:
    """Agreement of ``{estimate}_theta0/log_ratio`` with ``{reference}_...`` over the rows where both exist."""
    from symmetry.alignment import circular_correlation, match_to

    cols = [f"{estimate}_theta0", f"{estimate}_log_ratio", f"{reference}_theta0", f"{reference}_log_ratio"]
    sub = frame.dropna(subset=cols)
    if len(sub) < 3:
        return {"n": len(sub)}
    err, matched = match_to(sub[cols[0]], sub[cols[1]], sub[cols[2]], period)
    ref_ratio = sub[cols[3]].to_numpy(float)
    return {
        "n": len(sub),
        "circular_r": circular_correlation(sub[cols[0]], sub[cols[2]], period),
        "median_abs_deg": float(np.degrees(np.median(np.abs(err)))),
        "log_ratio_r": float(np.corrcoef(matched, ref_ratio)[0, 1]) if np.std(matched) > 0 else math.nan,
        "spread_deg": _circular_std_deg(sub[cols[0]].to_numpy(float), period),
        "log_ratio_sd": float(np.std(matched)),
    }


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, estimate, reference) comparison."""
    pairs = [("align", "truth"), ("mmd", "truth"), ("pred", "truth"), ("pred", "align")]
    rows = []
    for dataset in [d for d in DATASETS if d in set(frame["dataset"])]:
        sub = frame[frame["dataset"] == dataset]
        for est, ref in pairs:
            res = compare(sub, est, ref)
            if res.get("n", 0) >= 3:
                rows.append({"dataset": dataset, "estimate": est, "reference": ref, **res})
    return pd.DataFrame(rows)


def control_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean test PSNR (dB) per dataset: the noisy input, the hypernetwork (``sa``) and every control that ran."""
    columns = {"psnr_input": "input", "psnr_output": "hypernetwork"}
    columns.update({f"psnr_{c}": c for c in CONTROLS if f"psnr_{c}" in frame})
    table = frame.groupby("dataset", sort=False)[list(columns)].mean().rename(columns=columns)
    return table.dropna(axis=1, how="all")


def learned(res: dict) -> bool:
    """Whether a prediction tracks its reference: both correlations high and the predictions not constant."""
    return bool(
        res.get("circular_r", 0) > LEARNED_R
        and res.get("log_ratio_r", 0) > LEARNED_R
        and res.get("spread_deg", 0) > LEARNED_SPREAD_DEG
    )


# ---- figures and verdict --------------------------------------------------------------------------

_LABELS = {"truth": "truth", "align": "best alignment", "mmd": "alignment (MMD)", "pred": "hypernetwork"}


def _panel(ax, frame, estimate, reference, what, color, label):
    """Reference (its representative with theta0 in [0, 90) deg) against the estimate's nearest representative."""
    from symmetry.alignment import canonical, match_to

    cols = [f"{estimate}_theta0", f"{estimate}_log_ratio", f"{reference}_theta0", f"{reference}_log_ratio"]
    sub = frame.dropna(subset=cols)
    if sub.empty:
        return
    ref_theta, ref_ratio = canonical(sub[cols[2]], sub[cols[3]], PERIOD)
    err, est_ratio = match_to(sub[cols[0]], sub[cols[1]], ref_theta, PERIOD)
    x, y = (np.degrees(ref_theta), np.degrees(ref_theta + err)) if what == "angle" else (ref_ratio, est_ratio)
    ax.scatter(x, y, s=14, color=color, label=label, alpha=0.8)


def figures(frame: pd.DataFrame, config: dict) -> dict:
    """Scatter plots of angles (``angles``) and log axis ratios (``scales``) for the three comparisons."""
    from experiments.style import PALETTE, subplots

    panels = [
        ("align", "truth", "alignment estimator vs truth"),
        ("pred", "truth", "hypernetwork vs truth"),
        ("pred", "align", "hypernetwork vs best alignment"),
    ]
    figs = {}
    for what in ("angle", "scale"):
        fig, axes = subplots(3, 1, width=3.3, height=3.1)
        for ax, (est, ref, title) in zip(axes[0], panels):
            for k, dataset in enumerate(d for d in DATASETS if d in set(frame["dataset"])):
                sub = frame[frame["dataset"] == dataset]
                _panel(ax, sub, est, ref, what, PALETTE[k], f"{dataset}, covariance" if est == "align" else dataset)
                if est == "align" and dataset == "synthetic":
                    _panel(ax, sub, "mmd", ref, what, PALETTE[3], f"{dataset}, per-image MMD")
            if what == "angle":
                ax.plot([0, 90], [0, 90], color="k", lw=0.8)
                ax.plot([0, 90], [-45, 45], color="k", lw=0.5, ls=":")
                ax.plot([0, 90], [45, 135], color="k", lw=0.5, ls=":")
                ax.set_xlabel(f"{_LABELS[ref]} theta0 mod 90 (deg)")
                ax.set_ylabel(f"{_LABELS[est]} theta0, nearest copy (deg)")
            else:
                lim = config["max_log_ratio"]
                ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.8)
                ax.set_xlabel(f"{_LABELS[ref]} log(cx/cy)")
                ax.set_ylabel(f"{_LABELS[est]} log(cx/cy), matched")
            ax.set_title(title)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper left")
        kind = "stretch-axis angle (mod 90 deg)" if what == "angle" else "log axis ratio"
        fig.suptitle(f"Per-image {kind}: SA-Conv hypernetwork, best alignment with {config['group']}, truth")
        fig.tight_layout(rect=(0, 0, 1, 0.94))
        figs["angles" if what == "angle" else "scales"] = fig
    table = control_table(frame)
    if len(table.columns) > 2:
        figs["controls"] = _controls_figure(table)
    return figs


_CONTROL_LABELS = {
    "hypernetwork": "hypernetwork\n(per image)",
    "identity": "D = I\n(equivariant)",
    "truth": "true D_n",
    "truth_scaled": "true D_n at the\nlearned scale",
    "learned_mean": "mean learned D\n(constant)",
}


def _controls_figure(table: pd.DataFrame):
    """Test PSNR gain over the noisy input of the hypernetwork and of each fixed-transform control, per dataset."""
    from experiments.style import PALETTE, subplots

    variants = [c for c in table.columns if c != "input"]
    fig, axes = subplots(1, 1, width=1.2 * len(variants) + 1.0, height=3.2)
    ax = axes[0, 0]
    bar = 0.8 / len(table)
    for k, (dataset, row) in enumerate(table.iterrows()):
        x = np.arange(len(variants)) + (k - (len(table) - 1) / 2) * bar
        gains = [row[v] - row["input"] for v in variants]
        ax.bar(x, gains, width=bar, color=PALETTE[k], label=f"{dataset} (input {row['input']:.1f} dB)")
        for xi, g in zip(x, gains):
            if np.isfinite(g):
                ax.text(xi, g, f"{g:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(np.arange(len(variants)), [_CONTROL_LABELS.get(v, v) for v in variants], fontsize=7)
    ax.set_ylabel("test PSNR gain over the noisy input (dB)")
    ax.set_title("The same denoiser trained with each per-image transform D")
    ax.set_ylim(0, 1.25 * np.nanmax(table[variants].to_numpy() - table[["input"]].to_numpy()))
    ax.legend(loc="upper left", ncol=len(table))
    fig.tight_layout()
    return fig


def _fmt(res: dict) -> str:
    return (
        f"circular r={res['circular_r']:.2f}, median |dtheta|={res['median_abs_deg']:.1f} deg, "
        f"log-ratio r={res['log_ratio_r']:.2f} (n={res['n']})"
    )


def verdict(frame: pd.DataFrame, config: dict) -> str:
    """Whether the alignment estimator recovers the known transforms, and whether the hypernetwork learned them."""
    t = summary(frame)
    get = {(r.dataset, r.estimate, r.reference): r._asdict() for r in t.itertuples(index=False)}
    steps = int(frame["steps"].iloc[0])
    parts = []
    if ("synthetic", "align", "truth") in get:
        parts.append(f"estimator vs truth (synthetic): {_fmt(get[('synthetic', 'align', 'truth')])}")
    if ("synthetic", "mmd", "truth") in get:
        parts.append(f"per-image MMD vs truth: {_fmt(get[('synthetic', 'mmd', 'truth')])}")
    for dataset, ref in (("synthetic", "truth"), ("synthetic", "align"), ("rain100l", "align")):
        res = get.get((dataset, "pred", ref))
        if res:
            parts.append(
                f"hypernetwork vs {ref} ({dataset}): {_fmt(res)}, predicted angles spread {res['spread_deg']:.1f} deg"
            )
    res = get.get(("synthetic", "pred", "truth"))
    if res:
        head = (
            f"the hypernetwork learned the per-image transform in {steps} steps"
            if learned(res)
            else f"the hypernetwork did NOT learn the per-image transform in {steps} steps"
        )
    else:
        head = f"no synthetic cell; hypernetwork trained {steps} steps"
    table = control_table(frame)
    for dataset, row in table.iterrows():
        psnr = ", ".join(f"{name} {value:.2f}" for name, value in row.items() if np.isfinite(value))
        parts.append(f"test PSNR dB ({dataset}): {psnr}")
    if "truth" in table and "identity" in table and "synthetic" in table.index:
        gain = table.loc["synthetic", "truth"] - table.loc["synthetic", "identity"]
        rewarded = "rewards" if gain > 0 else "does NOT reward"
        head += f"; denoising {rewarded} the true per-image D (true D_n vs D = I: {gain:+.2f} dB)"
    return head + "; " + "; ".join(parts)
