"""What ``python -m symmetry.measure`` does once :mod:`symmetry.cli` has parsed its options: list, check, measure,
write.

Split from the parser so that ``--help`` and bad options need no torch (issue 20): :func:`symmetry.cli.main` imports
this module only after the options parse.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

import torch

from symmetry import budget
from symmetry.datasets import list_datasets
from symmetry.decoders import IMAGE_EXTENSIONS
from symmetry.errors import SymmetryError, UsageError
from symmetry.groups import EXAMPLE_GROUPS, GROUP_NAMES_HELP, get_group
from symmetry.io import check_outputs_apart_from_inputs, check_plot_format, check_writable
from symmetry.measurement import measure_dataset
from symmetry.runtime import DistInfo, broadcast_object, resolve_device, set_threads, setup_distributed
from symmetry.settings import Settings

SETTINGS = tuple(f.name for f in fields(Settings))  # option names passed to the API as Settings fields


SPLIT_DATASETS = ("rain100l", "div2k")
"""Datasets with train/valid/test splits: the split used is named when it was left to its default."""


def default_split(dataset: str, split: str | None, quiet: bool = False) -> str:
    """``split``, else ``"train"``; for a dataset with splits, a note on stderr says the default was taken."""
    if split is not None:
        return split
    if not quiet and str(dataset).split(":")[0].lower() in SPLIT_DATASETS:
        print(f"note: {dataset}: using the train split (the default; --split test for the test split)", file=sys.stderr)
    return "train"


def run(args: argparse.Namespace) -> int:
    """Carry out the parsed options of ``python -m symmetry.measure`` (:func:`symmetry.cli.build_parser`)."""
    if args.list_datasets:
        for key, text in list_datasets().items():
            print(f"{key:<24} {text}")
        return 0
    if args.list_groups:
        print(f"groups: {GROUP_NAMES_HELP}")
        for key in EXAMPLE_GROUPS:
            print(f"  {key:<8} {', '.join(get_group(key).names)}")
        return 0
    set_threads(args.threads)
    info = setup_distributed(resolve_device(args.device))
    try:
        return _run(args, info)
    except SymmetryError as err:
        if not info.main:
            return err.exit_code  # every rank raises the same error; rank 0 alone reports it
        raise
    finally:
        if info.owns_group:
            torch.distributed.destroy_process_group()


def _distinct_outputs(args: argparse.Namespace) -> None:
    """Refuse one path named for two outputs (one would overwrite the other)."""
    seen: dict[str, str] = {}
    for option in ("json", "csv", "checkpoint", "plot"):
        value = getattr(args, option)
        if value:
            key = os.path.realpath(os.path.expanduser(value))
            if key in seen:
                raise UsageError(
                    f"--{seen[key]} and --{option} name the same file {value}; give each output its own path"
                )
            seen[key] = option


def _run(args: argparse.Namespace, info: DistInfo) -> int:

    verdict = None  # rank 0 checks the output paths (its file system), the others follow
    if info.main:
        try:
            _distinct_outputs(args)
            outputs = {f"--{o}": getattr(args, o) for o in ("json", "csv", "plot", "checkpoint")}
            check_outputs_apart_from_inputs(outputs, args.dataset, IMAGE_EXTENSIONS)
            if args.plot:
                check_plot_format(args.plot)
            for option in ("json", "csv", "plot"):
                if getattr(args, option):
                    check_writable(getattr(args, option), f"--{option}")
            budget.check_measure(args, processes=budget.local_processes())  # before any work: issue 23
        except UsageError as err:
            verdict = err
    verdict = broadcast_object(verdict, info)
    if verdict is not None:
        raise verdict
    split = default_split(args.dataset, args.split, quiet=args.quiet or not info.main)
    report = measure_dataset(
        args.dataset,
        args.group,
        args.mesh,
        preset=args.preset,
        data_root=args.data_root,
        download=args.download,
        split=split,
        channels=args.channels,
        augment=args.augment,
        max_images=args.max_images,
        skip_bad=args.skip_bad,
        device=args.device,
        checkpoint=args.checkpoint,
        progress=not args.quiet and sys.stderr.isatty(),
        **{name: getattr(args, name) for name in SETTINGS if name != "exact"},
    )
    if not info.main:
        return 0
    if not args.quiet:
        report.render()
    if args.json:
        report.to_json(args.json)
    if args.csv:
        report.to_csv(args.csv)
    if args.plot:
        report.plot(args.plot)
    return 0
