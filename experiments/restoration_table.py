"""``restoration_table``: plain vs equivariant vs tl vs sa on denoising, SR and deraining (issues 4 and 9).

One cell trains one model on one task (:func:`analysis.train.train`) and scores it on held-out images
(:func:`analysis.evaluate.evaluate_run`): PSNR/SSIM on the Y channel, parameter count, time per training step and
the equivariance error (theory.md section 2) over the model's group and over its grid-exact quarter turns, each
normalisation (the whole output ``f``, the learned part ``g = f - skip``, and the fixed skip alone).

``sa`` follows the authors' recipe (theory.md section 3): it is fine-tuned for ``sa_steps`` from the ``tl`` run of
the same task, group and seed (``--init-from``), so its row has ``steps + sa_steps`` steps in all. ``group_variants``
adds ``equivariant``/``tl``/``sa`` rows with other groups (``dih4``, ``flip``) for the tasks in ``variant_tasks``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import seaborn as sns
import torch

from analysis.config import TrainConfig
from analysis.evaluate import evaluate_run
from analysis.protocol import evaluate_protocol
from analysis.train import CHECKPOINT_FILE, train
from experiments.runner import Context, SkipCell, cell_key
from experiments.style import subplots
from symmetry.errors import DataError

TASK_LABELS = {"denoise": "denoise", "sr": "SR", "derain": "derain"}
MODEL_ORDER = ["plain", "equivariant", "tl", "sa"]
GROUP_MODELS = ("equivariant", "tl", "sa")
"""The kinds that ``group_variants`` repeat with another group."""
SA_KEYS = ("init", "sa_steps")
"""Keys only an ``sa`` cell has: the kind of run it starts from and its fine-tuning steps."""


def cells(config: dict) -> list[dict]:
    """One cell per (task, model, group, seed); every ``sa`` cell follows its ``tl`` cell."""
    if config.get("testsets"):
        return protocol_cells(config)
    shared = {k: config[k] for k in ("data", "width", "depth", "kernel_size", "patch_size", "batch_size")}
    shared.update({k: config[k] for k in ("steps", "lr", "max_images", "test_images", "test_crop", "eq_images")})
    out = []
    for task in config["tasks"]:
        degradation = {"sigma": config["sigma"]} if task == "denoise" else {}
        if task == "sr":
            degradation = {"scale": config["sr_scale"]}
        rows = [(model, config["group"]) for model in config["models"]]
        if task in config.get("variant_tasks", []):
            rows += [(m, g) for g in config.get("group_variants", []) for m in config["models"] if m in GROUP_MODELS]
        for model, group in rows:
            extra = {"init": "tl", "sa_steps": config.get("sa_steps", config["steps"] // 2)} if model == "sa" else {}
            for seed in config["seeds"]:
                out.append(
                    {"task": task, **degradation, "model": model, "group": group, **shared, **extra, "seed": seed}
                )
    return out


def _train_config(cell: dict, ctx: Context, run_dir):
    sa = cell["model"] == "sa"
    steps = cell["sa_steps"] if sa else cell["steps"]
    return TrainConfig(
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
        steps=steps,
        lr=cell["lr"],
        seed=cell["seed"],
        device=str(ctx.device),
        val_every=max(1, steps // 3),
    )


def _train(cell: dict, ctx: Context):
    """Train (or resume) the run of ``cell``; an ``sa`` cell first makes sure its ``tl`` run exists."""
    run_dir = ctx.workdir / cell_key(cell)
    cfg = _train_config(cell, ctx, run_dir)
    if cell["model"] == "sa":
        tl_cell = {k: v for k, v in cell.items() if k not in SA_KEYS} | {"model": "tl"}
        tl_dir = _train(tl_cell, ctx)
        cfg = cfg.replace(init_from=str(tl_dir))
    resume = (run_dir / CHECKPOINT_FILE).exists()
    train(cfg, resume=resume, overwrite=not resume)
    return run_dir


def run_cell(cell: dict, ctx: Context) -> list[dict]:
    """Train, evaluate, and return one row of scores (protocol cells: one row per test set and rotation)."""
    if cell.get("testsets"):
        return run_protocol_cell(cell, ctx)
    if cell["data"] == "rain100l" and not ctx.data_available("rain100l"):
        raise SkipCell(f"rain100l not found under {ctx.data_root}; pass --data-root")
    run_dir = _train(cell, ctx)
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
        "train_steps": cell["steps"] + cell.get("sa_steps", 0),
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
        "equivariance_error_learned": (eq.get("learned") or {}).get("worst"),
        "equivariance_error_rot4_learned": (quarter.get("learned") or {}).get("worst"),
        "equivariance_error_skip": (eq.get("skip") or {}).get("worst"),
        "n_test": metrics["n_images"],
        "device": str(ctx.device),
    }
    return [row]


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """Seed-averaged scores, one row per (task, model, group), in a fixed order."""
    if "testset" in frame:
        return protocol_table(frame)
    cols = ["params", "train_steps", "time_per_step_s", "input_psnr", "psnr", "ssim"]
    cols += ["equivariance_error", "equivariance_error_learned", "equivariance_error_rot4"]
    cols += ["equivariance_error_rot4_learned", "equivariance_error_skip"]
    frame = frame.copy()
    for col in cols:
        if col not in frame:
            frame[col] = float("nan")
    if "group" not in frame:
        frame["group"] = ""
    grouped = frame.groupby(["task", "model", "group"], sort=False)[cols].mean().reset_index()
    grouped["model"] = pd.Categorical(grouped["model"], MODEL_ORDER, ordered=True)
    grouped["_task"] = grouped["task"].map(_task_rank)
    grouped["_variant"] = grouped.groupby("task")["group"].transform(lambda g: g != g.iloc[0]).astype(int)
    out = grouped.sort_values(["_task", "_variant", "group", "model"]).drop(columns=["_task", "_variant"])
    return out.reset_index(drop=True)


def _task_rank(task: str) -> int:
    return list(TASK_LABELS).index(task) if task in TASK_LABELS else len(TASK_LABELS)


def markdown(frame: pd.DataFrame) -> str:
    """The table as GitHub markdown (PSNR/SSIM on the Y channel; equivariance error worst over the group, relative
    of the whole output ``f``, of the learned part ``g = f - skip`` and of the fixed skip alone)."""
    if "testset" in frame:
        return protocol_markdown(frame)
    lines = [
        "| task | model | group | params | steps | s/step | input PSNR | PSNR | SSIM "
        "| equiv. err. group (output / learned / skip) | equiv. err. rot4 (output / learned) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table(frame).itertuples():
        lines.append(
            f"| {TASK_LABELS.get(r.task, r.task)} | {r.model} | {r.group} | {int(r.params):,} | {int(r.train_steps)} | "
            f"{r.time_per_step_s:.3f} | {r.input_psnr:.2f} | {r.psnr:.2f} | {r.ssim:.4f} | "
            f"{r.equivariance_error:.1e} / {r.equivariance_error_learned:.1e} / {r.equivariance_error_skip:.1e} | "
            f"{r.equivariance_error_rot4:.1e} / {r.equivariance_error_rot4_learned:.1e} |"
        )
    return "\n".join(lines)


def figures(frame: pd.DataFrame, config: dict) -> dict:
    """PSNR gain over the degraded input and equivariance error (learned part), per task, model and group."""
    if "testset" in frame:
        return {}  # the protocol's result is its table
    t = table(frame)
    t["row"] = [f"{m} ({g})" for m, g in zip(t["model"].astype(str), t["group"])]
    t["task_label"] = t["task"].map(lambda x: TASK_LABELS.get(x, x))
    t["gain"] = t["psnr"] - t["input_psnr"]
    fig, axes = subplots(2, 1, width=4.2)
    sns.barplot(t, x="task_label", y="gain", hue="row", ax=axes[0, 0])
    sns.barplot(t, x="task_label", y="equivariance_error_learned", hue="row", ax=axes[0, 1], legend=False)
    axes[0, 0].set_xlabel("")
    axes[0, 1].set_xlabel("")
    axes[0, 0].set_ylabel("PSNR gain over input (dB, Y)")
    axes[0, 0].set_title("Restoration quality")
    axes[0, 1].set_yscale("log")
    axes[0, 1].set_ylabel("equivariance error / ||f(x) - skip(x)||\n(worst over the row's group)")
    axes[0, 1].set_title("Equivariance of the learned part")
    axes[0, 0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return {"bars": fig}


def verdict(frame: pd.DataFrame, config: dict) -> str:
    """Which model is best per task, and whether the equivariant models are exact for quarter turns."""
    if "testset" in frame:
        return protocol_verdict(frame)
    t = table(frame)
    parts = []
    for task, sub in t.groupby("task", sort=False):
        best = sub.loc[sub["psnr"].idxmax()]
        parts.append(f"{TASK_LABELS.get(task, task)}: best {best['model']} ({best['group']}) {best['psnr']:.2f} dB")
        rows = {(str(r.model), r.group): r.psnr for r in sub.itertuples()}
        for group in dict.fromkeys(sub["group"]):
            if ("sa", group) in rows and ("tl", group) in rows:
                more = int(config.get("sa_steps", config["steps"] // 2))
                parts.append(
                    f"sa - tl ({group}) {rows[('sa', group)] - rows[('tl', group)]:+.2f} dB "
                    f"(sa: the tl run fine-tuned {more} more steps)"
                )
    main_group = config["group"]
    equi = t[(t["model"].astype(str) == "equivariant") & (t["group"] == main_group)]["equivariance_error_rot4_learned"]
    plain = t[t["model"].astype(str) == "plain"]["equivariance_error_rot4_learned"]
    if len(equi) and len(plain):
        parts.append(
            f"quarter-turn error of the learned part: equivariant ({main_group}) <= {equi.max():.1e}, "
            f"plain >= {plain.min():.1e} (tl and sa are not compared: with a D per layer, and per image for sa, "
            "they keep no exact symmetry but the half turn)"
        )
    return "; ".join(parts)


# ---- the paper's protocol ([full]): EDSR-baseline-sized models on DIV2K, scored on benchmark test sets ----------

PROTOCOL_KEYS = ("group", "width", "depth", "kernel_size", "basis", "tail", "match", "patch_size", "batch_size")
PROTOCOL_KEYS += ("steps", "lr", "schedule", "lr_step", "amp", "nproc_per_node", "max_images", "rotated", "testsets")
PROTOCOL_KEYS += ("test_images", "sa_steps")


def protocol_cells(config: dict) -> list[dict]:
    """One cell per (task, scale or sigma, model, seed); ``sa`` cells come after the ``tl`` cells they start from."""
    shared = {k: config[k] for k in PROTOCOL_KEYS if k in config}
    models = sorted(config["models"], key=lambda m: m == "sa")
    out = []
    for task in config["tasks"]:
        if task == "sr":
            settings = [{"scale": int(s)} for s in config["sr_scales"]]
        elif task == "denoise":
            settings = [{"sigma": float(s)} for s in config["sigmas"]]
        else:
            settings = [{}]
        data = config["derain_data"] if task == "derain" else config["data"]
        for degradation in settings:
            for model in models:
                for seed in config["seeds"]:
                    out.append({"task": task, **degradation, "model": model, "data": data, **shared, "seed": seed})
    return out


def _protocol_config(cell: dict, ctx: Context, run_dir, init_from: str | None) -> dict:
    options = {}
    if cell["model"] == "plain":
        options["match"] = cell["match"]
    else:
        options["basis"] = cell["basis"]
        if cell["task"] == "sr":
            options["tail"] = cell["tail"]
    return {
        "out": str(run_dir),
        "task": cell["task"],
        "model": cell["model"],
        "group": cell["group"],
        "data": cell["data"],
        "data_root": str(ctx.data_root) if ctx.data_root else None,
        "max_images": cell.get("max_images") or None,
        "scale": cell.get("scale"),
        "sigma": cell.get("sigma", 25.0),
        "width": cell["width"],
        "depth": cell["depth"],
        "kernel_size": cell["kernel_size"],
        "patch_size": cell["patch_size"],
        "batch_size": cell["batch_size"],
        "steps": cell.get("sa_steps", cell["steps"]) if cell["model"] == "sa" else cell["steps"],  # sa: from tl
        "lr": cell["lr"],
        "schedule": cell["schedule"],
        "lr_step": cell.get("lr_step") or None,
        "augment": "dih4",  # EDSR's flips and quarter turns
        "seed": cell["seed"],
        "amp": bool(cell.get("amp")),
        "init_from": init_from,
        "val_every": max(1, cell["steps"] // 20),
        "ckpt_every": max(1, cell["steps"] // 100),
        "model_options": options,
    }


def _train_protocol_run(options: dict, cell: dict, ctx: Context, resume: bool) -> None:
    """Train in this process, or under ``torchrun`` on ``nproc_per_node`` GPUs (0: every visible GPU)."""
    nproc = int(cell.get("nproc_per_node") or 0) or (torch.cuda.device_count() if ctx.device.type == "cuda" else 1)
    if nproc <= 1:
        train(options, resume=resume, overwrite=not resume, progress=ctx.progress, quiet=False)
        return
    spec = ctx.workdir / f"{cell_key(cell)}.train.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({**options, "device": "cuda"}, indent=2))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "analysis.train", "--config", str(spec), "--resume" if resume else "--overwrite"]
    if subprocess.run(cmd, check=False).returncode:
        raise DataError(f"training under torchrun failed for {options['out']}; see its messages above")


def run_protocol_cell(cell: dict, ctx: Context) -> list[dict]:
    """Train one model (``sa`` from its ``tl`` cell's checkpoint); score it on the test sets (analysis.protocol)."""
    root = ctx.data_root
    if cell["task"] == "derain":
        if not ctx.data_available("rain100l"):
            raise SkipCell(f"rain100l not found under {root}; pass --data-root")
        testsets = [("rain100l", str(root))]
    else:
        missing = [name for name in cell["testsets"] if not ctx.data_available(name)]
        if missing:
            raise SkipCell(f"test set(s) {', '.join(missing)} not found under {root}; pass --data-root")
        testsets = [(name.lower(), str(root / name)) for name in cell["testsets"]]
    init_from = None
    if cell["model"] == "sa":
        tl_run = ctx.workdir / cell_key({**cell, "model": "tl"})
        if not (tl_run / CHECKPOINT_FILE).exists():
            raise SkipCell("sa starts from the tl cell of the same settings; add tl to models")
        init_from = str(tl_run / CHECKPOINT_FILE)
    run_dir = ctx.workdir / cell_key(cell)
    resume = (run_dir / CHECKPOINT_FILE).exists()
    _train_protocol_run(_protocol_config(cell, ctx, run_dir, init_from), cell, ctx, resume)
    summary, _ = evaluate_protocol(
        run_dir,
        testsets,
        rotated=bool(cell.get("rotated")),
        device=str(ctx.device),
        max_images=cell.get("test_images") or None,
        show_progress=ctx.progress,
    )
    keep = ("testset", "rotation", "n_images", "psnr", "ssim", "psnr_rgb", "baseline_psnr", "baseline_ssim", "border")
    return [{k: r[k] for k in keep} | {"device": str(ctx.device)} for r in summary]


def _setting(row) -> str:
    if row["task"] == "sr":
        return f"SR x{int(row['scale'])}"
    if row["task"] == "denoise":
        return f"denoise σ{row['sigma']:g}"
    return "derain"


def protocol_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Seed-averaged PSNR/SSIM per (setting, test set, rotation, model)."""
    f = frame.copy()
    f["setting"] = [_setting(r) for _, r in f.iterrows()]
    cols = ["psnr", "ssim", "baseline_psnr", "baseline_ssim"]
    return f.groupby(["setting", "testset", "rotation", "model"], sort=False)[cols].mean().reset_index()


def protocol_markdown(frame: pd.DataFrame) -> str:
    """PSNR / SSIM (Y channel) per setting and test set, one column per model; rotated sets marked ``(rot)``."""
    t = protocol_table(frame)
    t["set"] = t["testset"] + t["rotation"].map(lambda r: "" if r == "none" else " (rot)")
    models = list(dict.fromkeys(t["model"]))
    lines = ["| setting | test set | " + " | ".join(models) + " |", "|---|---|" + "---:|" * len(models)]
    for (setting, name), sub in t.groupby(["setting", "set"], sort=False):
        by = sub.set_index("model")
        cells = [f"{by.loc[m, 'psnr']:.2f} / {by.loc[m, 'ssim']:.4f}" if m in by.index else "" for m in models]
        lines.append(f"| {setting} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def protocol_verdict(frame: pd.DataFrame) -> str:
    """The best model per setting and test set (unrotated)."""
    t = protocol_table(frame)
    t = t[t["rotation"] == "none"]
    parts = []
    for (setting, name), sub in t.groupby(["setting", "testset"], sort=False):
        best = sub.loc[sub["psnr"].idxmax()]
        parts.append(f"{setting} {name}: best {best['model']} {best['psnr']:.2f} dB")
    return "; ".join(parts)
