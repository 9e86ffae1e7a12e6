"""Sharded measurement (torchrun, or an initialised process group) equals one process."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

import symmetry
from symmetry.measure import main

ROOT = Path(__file__).resolve().parents[1]
DATASET = "synthetic:isotropic,n=7,size=32"  # 7 images: the two ranks get 4 and 3
OPTIONS = ["--group", "rot8", "--mesh", "2,1", "--radius", "4", "--windows", "16", "--features", "64"]
OPTIONS += ["--permutations", "20", "--bootstrap", "20", "--frechet", "--device", "cpu", "--quiet"]
API = dict(mesh=(2.0, 1.0), radius=4.0, windows=16, features=64, permutations=20, bootstrap=20, device="cpu")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(processes)]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *launcher, "-m", "symmetry.measure", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def assert_same_numbers(a: list[dict], b: list[dict], rel: float = 1e-6) -> None:
    assert len(a) == len(b) > 0
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for key, va in ra.items():
            vb = rb[key]
            if isinstance(va, float) and isinstance(vb, float):
                assert (math.isnan(va) and math.isnan(vb)) or va == pytest.approx(vb, rel=rel, abs=1e-12), (key, ra, rb)
            else:
                assert va == vb, (key, ra, rb)


def assert_same_report(one: dict, two: dict) -> None:
    for part in ("rows", "per_image", "fits"):
        assert_same_numbers(one[part], two[part])
    for key in ("images", "skipped", "skipped_images", "bandwidth"):
        assert one["meta"][key] == two["meta"][key]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("single") / "one.json"
    assert main(["--dataset", DATASET, *OPTIONS, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_two_processes_equal_one_and_resume_from_per_rank_checkpoints(single, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    out = tmp_path / "two.json"
    res = torchrun("--dataset", DATASET, *OPTIONS, "--json", str(out), "--checkpoint", str(ckpt))
    assert res.returncode == 0, res.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["meta"]["processes"] == 2 and two["meta"]["images"] == 7
    assert_same_report(single, two)
    per_image = [(r["mesh"], r["image"]) for r in two["per_image"]]
    assert len(set(per_image)) == 7 * 2 and len(per_image) == 7 * 2 * 7  # every image, mesh and element once
    assert sorted(p.name for p in tmp_path.glob("run.ckpt*")) == ["run.ckpt.rank0-of-2", "run.ckpt.rank1-of-2"]

    # rerunning resumes each rank from its finished checkpoint and gives the same report
    out.unlink()
    res = torchrun("--dataset", DATASET, *OPTIONS, "--json", str(out), "--checkpoint", str(ckpt))
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_report(single, json.loads(out.read_text()))


def test_an_unreadable_image_on_one_rank_stops_every_rank_with_one_message(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(folder / f"im{i}.png")
    (folder / "im1.png").write_bytes(b"\x89PNG truncated")  # image 1 belongs to rank 1
    res = torchrun("--dataset", f"folder:{folder}", *OPTIONS, "--bandwidth", "2")
    assert res.returncode != 0
    ours = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and "im1.png" in ours[0] and "--skip-bad" in ours[0], res.stderr[-3000:]


def _api_worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        report = symmetry.measure_dataset(DATASET, "rot8", frechet=True, **API)
        Path(f"{out}.{rank}").write_text(json.dumps({"rows": report.rows, "per_image": report.per_image}))
    finally:
        dist.destroy_process_group()


def test_measure_inside_an_initialised_process_group_returns_the_whole_report_on_every_rank(tmp_path):
    one = symmetry.measure_dataset(DATASET, "rot8", frechet=True, **API)
    out = str(tmp_path / "api")
    mp.spawn(_api_worker, args=(2, free_port(), out), nprocs=2, join=True)
    for rank in range(2):
        got = json.loads(Path(f"{out}.{rank}").read_text())
        assert_same_numbers(one.rows, got["rows"])
        assert_same_numbers(one.per_image, got["per_image"])
