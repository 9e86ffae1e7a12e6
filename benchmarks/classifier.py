"""A classifier two-sample test of symmetry, and its CPU time beside ``symmetry.measure_dataset`` (docs/performance.md).

    python -m benchmarks.classifier --data-root ../shared/data --threads 1     # 100 Rain100L test photos
    python -m benchmarks.classifier --quick                                     # bundled photos, a smoke run

The classifier test, in the spirit of "To augment or not to augment?" (implemented independently): a 5-layer CNN
(4 convolutions and a linear layer) is trained with Adam (the project's one loop, ``analysis.fit``), a few hundred
steps at a constant learning rate, to tell 64x64 crops from their
transformed versions (label 1: the crop moved by a uniformly random non-identity element of the group). Its
held-out accuracy against chance is the test. If the image law is G-invariant, a crop and its transformed
version have the same law, so no classifier beats 1/2 on fresh data.

Exactness (the choice): the images are split in two; the classifier is trained on crops of the first half only.
Every held-out image gets one fair label and ``test_crops`` crops, all moved by one random element when the label
is 1; the image's prediction is the sign of its mean logit. Under the null the input's law does not depend on the
label, and held-out images are independent, so the number of correct images is Binomial(n, 1/2) exactly and the
one-sided p-value ``P(Binomial(n, 1/2) >= correct)`` is exact. (Counting crops instead would overstate n: crops of
one image are dependent.)

The cost comparison times, in CPU seconds of this process (1 thread by default), ``symmetry.measure_dataset`` on
the same photos for the groups rot4, flip, flipud and dih4 in one run at five scales (radius 4, 8, 16, 32, 64 at
meshes 0.5 .. 8, the ``--radius`` scale profile with the estimator's defaults otherwise), the ``photos`` preset
(one scale), the default aggregated test (six kernels and scales under one threshold), and one classifier test
(one group). It prints the ratios, and every decision of both methods.
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from scipy.stats import binom

import symmetry
from analysis.fit import fit
from benchmarks.options import add_threads_option, use_threads
from symmetry.datasets import load_dataset
from symmetry.estimators import holm
from symmetry.groups import get_group
from symmetry.locations import DATA_ROOT_HELP, data_root
from symmetry.runtime import cli_entry
from symmetry.settings import PRESETS
from symmetry.sources import ImageSource
from symmetry.streams import rng as stream
from symmetry.streams import seed_of
from symmetry.transforms import transform_image

CROP = 64


def make_cnn(channels: int = 1, width: int = 16) -> torch.nn.Module:
    """Four 3x3 convolutions (ReLU, 2x2 max-pooling after the first three, global average after the last) and a
    linear layer: five layers with weights, one logit."""
    layers: list[torch.nn.Module] = []
    c = channels
    for i, out in enumerate((width, 2 * width, 4 * width, 4 * width)):
        layers += [torch.nn.Conv2d(c, out, 3, padding=1), torch.nn.ReLU()]
        layers.append(torch.nn.MaxPool2d(2) if i < 3 else torch.nn.AdaptiveAvgPool2d(1))
        c = out
    return torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(c, 1))


def random_crops(images: list[torch.Tensor], count: int, rng: np.random.Generator, size: int = CROP) -> torch.Tensor:
    """``count`` crops ``(count, C, size, size)``, each from a uniformly chosen image at a uniform position."""
    out = []
    for k in rng.integers(0, len(images), count):
        image = images[k]
        top = int(rng.integers(0, image.shape[-2] - size + 1))
        left = int(rng.integers(0, image.shape[-1] - size + 1))
        out.append(image[..., top : top + size, left : left + size])
    return torch.stack(out)


def move(crops: torch.Tensor, elements, which: np.ndarray) -> torch.Tensor:
    """Each crop moved by ``elements[which[i]]`` (grid-exact: an exact pixel permutation of a square crop)."""

    out = crops.clone()
    for e in set(which.tolist()):
        mask = torch.from_numpy(which == e)
        out[mask] = transform_image(crops[mask], elements[e])[0].to(crops.dtype)
    return out


def classifier_test(
    images: list[torch.Tensor],
    group: str,
    *,
    steps: int = 300,
    batch: int = 64,
    test_crops: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict:
    """Train on half of ``images`` (``(C, H, W)`` tensors), test on the other half (module docstring); returns
    ``accuracy`` (held-out images), ``correct``, ``n``, ``p_value`` (exact binomial, one-sided), ``train_loss`` (mean
    cross-entropy of the last tenth of the steps; log 2 = 0.693 is chance) and ``seconds``."""

    started = time.process_time()
    elements = get_group(group).non_identity
    if not all(e.is_grid_exact for e in elements):
        raise ValueError(f"the classifier test needs a grid-exact group (quarter turns, flips), got {group}")
    images = [im.float() - 0.5 for im in images if min(im.shape[-2:]) >= CROP]
    if len(images) < 4:
        raise ValueError(f"need at least 4 images of at least {CROP}x{CROP} pixels, got {len(images)}")
    order = stream(seed, "split").permutation(len(images))
    half = len(images) // 2
    train = [images[i] for i in order[:half]]
    test = [images[i] for i in order[half:]]
    torch.manual_seed(seed_of(seed, "init"))
    net = make_cnn(images[0].shape[0]).to(device)

    def batch_of_step(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Step ``k``'s crops (half of them moved by a random non-identity element) and labels: a function of k."""
        draws = stream(seed, "batches", k)
        crops = random_crops(train, batch, draws)
        labels = draws.integers(0, 2, batch)
        moved = move(crops, elements, draws.integers(0, len(elements), batch))
        inputs = torch.where(torch.from_numpy(labels == 1)[:, None, None, None], moved, crops)
        return inputs.to(device), torch.from_numpy(labels).float().to(device)

    def step(model: torch.nn.Module, data) -> torch.Tensor:
        inputs, labels = data
        return torch.nn.functional.binary_cross_entropy_with_logits(model(inputs)[:, 0], labels)

    losses = fit(net, step, batch_of_step, steps=steps, lr=lr, schedule="constant", device=torch.device(device)).losses
    net.eval()
    held = stream(seed, "noise")
    correct = 0
    with torch.no_grad():
        for image in test:
            label = int(held.integers(0, 2))
            crops = random_crops([image], test_crops, held)
            if label:
                crops = move(crops, elements, np.full(test_crops, held.integers(0, len(elements))))
            correct += int((net(crops.to(device)).mean() > 0).item() == bool(label))
    n = len(test)
    return {
        "group": group,
        "correct": correct,
        "n": n,
        "accuracy": correct / n,
        "p_value": float(binom.sf(correct - 1, n, 0.5)),
        "train_loss": float(np.mean(losses[-max(1, steps // 10) :])),  # last tenth; log 2 = 0.693 is chance
        "seconds": time.process_time() - started,
    }


def _photos(args) -> tuple[str, list]:

    if args.quick:
        dataset = load_dataset("skimage")
    else:
        dataset = load_dataset("rain100l", data_root=args.data_root, split=args.split)
    sources = [ImageSource(s.name, array=s.load()) for s in list(dataset)[: args.images]]
    return dataset.name, sources


@cli_entry  # a missing Rain100L is one error line
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    p.add_argument("--split", default="test", help="Rain100L split (default: test, 100 photos)")
    p.add_argument("--images", type=int, default=100, help="photos (default 100; fewer when the split has fewer)")
    p.add_argument("--groups", default="rot4,flip,flipud,dih4", help="groups (default rot4,flip,flipud,dih4)")
    p.add_argument("--steps", type=int, default=300, help="Adam steps of the classifier (default 300)")
    add_threads_option(p, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="the 13 bundled photos, 30 steps, the preset only")
    args = p.parse_args(argv)
    use_threads(args.threads)

    args.data_root = data_root(args.data_root)
    steps = 30 if args.quick else args.steps
    name, sources = _photos(args)
    groups = args.groups.split(",")
    print(f"{name}: {len(sources)} photos, groups {args.groups}, {torch.get_num_threads()} thread(s)")

    photos = PRESETS["photos"]
    runs = {f"photos preset (radius {photos['radius']:g}, mesh {photos['mesh'][0]:g})": dict(preset="photos")}
    if not args.quick:
        runs["scale profile (radius 4..64, meshes 0.5..8)"] = dict(radius="4,8,16,32,64", mesh=1.0)
        runs["default: aggregated test (6 kernels and scales)"] = {}
    timings, decisions = {}, {}
    for label, options in runs.items():
        start = time.process_time()
        report = symmetry.measure_dataset(sources, args.groups, device="cpu", seed=args.seed, **options)
        timings[label] = time.process_time() - start
        decisions[label] = {v["group"]: (v["symmetric"], v["p_adjusted"]) for v in report.verdicts}
        print(f"  estimator, {label}: {timings[label]:.1f} CPU s")
    tests = []
    for g in groups:
        result = classifier_test([s.array for s in sources], g, steps=steps, seed=args.seed)
        tests.append(result)
        print(
            f"  classifier test {g}: {result['seconds']:.1f} CPU s, held-out accuracy {result['correct']}/{result['n']}"
            f" = {result['accuracy']:.2f}, p = {result['p_value']:.3g}, final training loss {result['train_loss']:.3f}"
        )
    one = float(np.mean([t["seconds"] for t in tests]))
    what = f"{steps} Adam steps, batch 64, {CROP}x{CROP} crops"
    print(f"one classifier test ({what}): {one:.1f} CPU s (mean of {len(tests)})")
    for label, seconds in timings.items():
        print(f"  {label}, 4 groups: {seconds:.1f} CPU s = {seconds / one:.2f} x one classifier test")
    holm = _holm([t["p_value"] for t in tests])
    print("decisions at alpha 0.05 (estimator: Holm over its run; classifier: Holm over the groups' tests):")
    for t, p_adj in zip(tests, holm):
        parts = [f"classifier {'NOT symmetric' if p_adj < 0.05 else 'symmetric'} (adjusted p {p_adj:.3g})"]
        for label, d in decisions.items():
            symmetric, p = d[t["group"]]
            parts.append(f"{label.split(' (')[0]} {'symmetric' if symmetric else 'NOT symmetric'} (p {p:.3g})")
        print(f"  {t['group']:<7} " + "; ".join(parts))
    return 0


def _holm(p_values: list[float]) -> list[float]:

    return [float(v) if math.isfinite(v) else math.nan for v in holm(p_values)]


if __name__ == "__main__":
    sys.exit(main())
