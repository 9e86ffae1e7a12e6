"""``restoration_table``: plain vs equivariant vs sa on denoising, SR and deraining (issue 4, item 5).

One cell trains one model on one task (:func:`analysis.train.train`) and scores it on held-out images
(:func:`analysis.evaluate.evaluate_run`): PSNR/SSIM on the Y channel, parameter count, time per training step and
the equivariance error (theory.md section 2) over the model's group and over its grid-exact quarter turns.
"""

from __future__ import annotations

import pandas as pd

from experiments.runner import Context, SkipCell, cell_key

TASK_LABELS = {"denoise": "denoise", "sr": "SR", "derain": "derain"}
MODEL_ORDER = ["plain", "equivariant", "sa"]


def cells(config: dict) -> list[dict]:
    """One cell per (task, model, seed)."""
    shared = {k: config[k] for k in ("group", "data", "width", "depth", "kernel_size", "patch_size", "batch_size")}
    shared.update({k: config[k] for k in ("steps", "lr", "max_images", "test_images", "test_crop", "eq_images")})
    out = []
    for task in config["tasks"]:
        degradation = {"sigma": config["sigma"]} if task == "denoise" else {}
        if task == "sr":
            degradation = {"scale": config["sr_scale"]}
        for model in config["models"]:
            for seed in config["seeds"]:
                out.append({"task": task, **degradation, "model": model, **shared, "seed": seed})
    return out


def run_cell(cell: dict, ctx: Context) -> list[dict]:
    """Train, evaluate, and return one row of scores."""
    from analysis.config import TrainConfig
    from analysis.evaluate import evaluate_run
    from analysis.train import CHECKPOINT_FILE, train

    if cell["data"] == "rain100l" and not ctx.data_available("rain100l"):
        raise SkipCell(f"rain100l not found under {ctx.data_root}; pass --data-root")
    run_dir = ctx.workdir / cell_key(cell)
    cfg = TrainConfig(
        out=str(run_dir),
        task=cell["task"],
        model=cell["model"],
        group=cell["group"],
        data=cell["data"],
        data_root=str(ctx.data_root) if ctx.data_root else None,
        max_images=cell["max_images"],
        scale=cell.get("scale"),
        sigma=cell.get("sigma", 25.0),
        width=cell["width"],
        depth=cell["depth"],
        kernel_size=cell["kernel_size"],
        patch_size=cell["patch_size"],
        batch_size=cell["batch_size"],
        steps=cell["steps"],
        lr=cell["lr"],
        seed=cell["seed"],
        device=str(ctx.device),
        val_every=max(1, cell["steps"] // 3),
    )
    resume = (run_dir / CHECKPOINT_FILE).exists()
    train(cfg, resume=resume, overwrite=not resume)
    crop = cell["test_crop"] or None
    metrics = evaluate_run(
        run_dir, max_images=cell["test_images"], crop=crop, eq_images=cell["eq_images"], device=str(ctx.device)
    )
    quarter = evaluate_run(
        run_dir,
        group="rot4",
        max_images=cell["eq_images"],
        crop=crop,
        eq_images=cell["eq_images"],
        device=str(ctx.device),
        write=False,
    )["equivariance"]
    eq = metrics["equivariance"]
    row = {
        "params": metrics["params"],
        "time_per_step_s": metrics["time_per_step_s"],
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "input_psnr": metrics["input_psnr"],
        "input_ssim": metrics["input_ssim"],
        "train_loss": metrics["train_loss"],
        "test_loss": metrics["test_loss"],
        "generalization_gap": metrics["generalization_gap"],
        "equivariance_error": eq["worst"],
        "equivariance_error_mean": eq["mean"],
        "equivariance_error_rot4": quarter["worst"],
        "n_test": metrics["n_images"],
        "device": str(ctx.device),
    }
    return [row]


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """Seed-averaged scores, one row per (task, model), in a fixed order."""
    cols = ["params", "time_per_step_s", "input_psnr", "psnr", "ssim", "equivariance_error", "equivariance_error_rot4"]
    grouped = frame.groupby(["task", "model"], sort=False)[cols].mean().reset_index()
    grouped["model"] = pd.Categorical(grouped["model"], MODEL_ORDER, ordered=True)
    return grouped.sort_values(["task", "model"], key=lambda s: s if s.name == "model" else s.map(_task_rank))


def _task_rank(task: str) -> int:
    return list(TASK_LABELS).index(task) if task in TASK_LABELS else len(TASK_LABELS)


def markdown(frame: pd.DataFrame) -> str:
    """The table as GitHub markdown (PSNR/SSIM on the Y channel; equivariance error worst over the group)."""
    lines = [
        "| task | model | params | s/step | input PSNR | PSNR | SSIM | equiv. error (group) | equiv. error (rot4) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table(frame).itertuples():
        lines.append(
            f"| {TASK_LABELS.get(r.task, r.task)} | {r.model} | {int(r.params):,} | {r.time_per_step_s:.3f} | "
            f"{r.input_psnr:.2f} | {r.psnr:.2f} | {r.ssim:.4f} | {r.equivariance_error:.2e} | "
            f"{r.equivariance_error_rot4:.1e} |"
        )
    return "\n".join(lines)


def figures(frame: pd.DataFrame, config: dict) -> dict:
    """PSNR gain over the degraded input and equivariance error, per task and model."""
    from experiments.style import MODEL_COLORS, subplots

    t = table(frame)
    tasks = [task for task in TASK_LABELS if task in set(t["task"])]
    fig, axes = subplots(2, 1, width=3.6)
    width = 0.8 / len(MODEL_ORDER)
    for j, model in enumerate(MODEL_ORDER):
        sub = t[t["model"] == model].set_index("task").reindex(tasks)
        xs = [i + (j - 1) * width for i in range(len(tasks))]
        kw = {"width": width, "color": MODEL_COLORS[model], "label": model}
        axes[0, 0].bar(xs, sub["psnr"] - sub["input_psnr"], **kw)
        axes[0, 1].bar(xs, sub["equivariance_error"], **kw)
    for ax in axes[0]:
        ax.set_xticks(range(len(tasks)), [TASK_LABELS[x] for x in tasks])
    axes[0, 0].set_ylabel("PSNR gain over input (dB, Y)")
    axes[0, 0].set_title("Restoration quality")
    axes[0, 1].set_yscale("log")
    axes[0, 1].set_ylabel(f"equivariance error, worst over {config['group']}")
    axes[0, 1].set_title("Equivariance (relative, central disk)")
    axes[0, 0].legend()
    fig.tight_layout()
    return {"bars": fig}


def verdict(frame: pd.DataFrame, config: dict) -> str:
    """Which model is best per task, and whether the equivariant models are exact for quarter turns."""
    t = table(frame)
    parts = []
    for task, sub in t.groupby("task", sort=False):
        best = sub.loc[sub["psnr"].idxmax()]
        parts.append(f"{TASK_LABELS.get(task, task)}: best {best['model']} {best['psnr']:.2f} dB")
    eq = t[t["model"].astype(str) != "plain"]["equivariance_error_rot4"].max()
    plain = t[t["model"].astype(str) == "plain"]["equivariance_error_rot4"].min()
    return "; ".join(parts) + f"; quarter-turn error equivariant/sa <= {eq:.1e}, plain >= {plain:.1e}"
