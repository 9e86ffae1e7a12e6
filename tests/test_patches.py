"""Lazy (disk-cached, memory-mapped) training patches: same patches as in memory, ranks partition the images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.patches import LazyItem, ShardedPatches, items_fingerprint, lazy_items
from analysis.tasks import PatchDataset, load_items

SIZES = [(40, 36), (33, 45), (64, 64), (38, 38), (50, 41), (36, 52), (44, 44), (39, 47), (48, 33), (35, 35)]


@pytest.fixture
def spec(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMMETRY_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        folder = tmp_path / "imgs" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return f"folder:{tmp_path / 'imgs'}"


@pytest.mark.parametrize(("task", "scale", "augment"), [("denoise", 1, None), ("sr", 2, "dih4"), ("sr", 3, None)])
def test_lazy_items_give_exactly_the_eager_patches(spec, tmp_path, task, scale, augment):
    eager = load_items(task, spec, scale=scale)
    lazy = lazy_items(task, spec, scale=scale)
    assert all(isinstance(it, LazyItem) for it in lazy)
    assert [it.size for it in lazy] == [it.size for it in eager]  # from headers, before decoding
    assert sum(it.decoded for it in lazy) == 0
    kw = dict(patch_size=24, scale=scale, sigma=15, augment=augment, seed=3)
    a, b = PatchDataset(eager, task, **kw), PatchDataset(lazy, task, **kw)
    for k in range(0, 40, 3):
        for x, y in zip(a[k], b[k], strict=True):
            assert torch.equal(x, y)
    sa, sb = ShardedPatches(a, 4), ShardedPatches(b, 4)
    for k in (0, 1, 7, 30):
        for x, y in zip(sa.batch_of_step(k), sb.batch_of_step(k), strict=True):
            assert torch.equal(x, y)
    # the cache holds raw arrays: equal to the in-memory stores, readable without pickle
    for e, it in zip(eager, lazy, strict=True):
        assert it.decoded <= 1
        target = np.load(it.folder / "target.npy", allow_pickle=False)
        assert np.array_equal(target, e.target_store.numpy())
        if e.input_store is not None:
            assert np.array_equal(np.load(it.folder / "input.npy", allow_pickle=False), e.input_store.numpy())
    # a second process finds the cache: nothing is decoded again, and the fingerprint is the same
    again = lazy_items(task, spec, scale=scale)
    PatchDataset(again, task, **kw).batch(range(20))
    assert sum(it.decoded for it in again) == 0
    assert items_fingerprint(again) == items_fingerprint(lazy) != items_fingerprint(eager)


def test_content_key_follows_the_pixels_not_the_name(spec, tmp_path):
    before = lazy_items("denoise", spec)
    path = tmp_path / "imgs" / "b" / "00.png"
    arr = np.array(Image.open(path))
    arr[0, 0, 0] ^= 1
    Image.fromarray(arr).save(path)
    after = lazy_items("denoise", spec)
    changed = [p.name for p, q in zip(before, after, strict=True) if p.key != q.key]
    assert len(changed) == 1 and "00" in changed[0]
    assert lazy_items("denoise", spec, channels="gray")[1].key != after[1].key


def test_ranks_partition_the_images_and_share_one_global_batch(spec):
    items = lazy_items("denoise", spec)
    ds = PatchDataset(items, "denoise", patch_size=24, sigma=25, seed=1)
    stream = ShardedPatches(ds, 4)
    shares = [set(stream.images_of_rank(r, 2)) for r in range(2)]
    assert shares[0].isdisjoint(shares[1]) and shares[0] | shares[1] == set(range(len(items)))
    assert {len(s) for s in shares} == {len(items) // 2}
    for k in range(6):
        whole = stream.batch_of_step(k)
        parts = [ShardedPatches(ds, 4).batch_of_step(k, r, 2) for r in range(2)]  # fresh objects: k alone decides
        assert torch.equal(torch.cat([p[0] for p in parts]), whole[0])
        assert torch.equal(torch.cat([p[1] for p in parts]), whole[1])
    # a rank that only ever computes its positions opens only its own images
    fresh = lazy_items("denoise", spec)
    rank1 = ShardedPatches(PatchDataset(fresh, "denoise", patch_size=24, sigma=25, seed=1), 4)
    for k in range(12):
        rank1.batch_of_step(k, 1, 2)
    touched = {i for i, it in enumerate(fresh) if it.opened}
    assert touched == shares[1]
    # every image of a shard is used once per shard epoch
    for j in range(4):
        shard = stream.shards[j]
        assert sorted(stream.image_at(k, j) for k in range(len(shard))) == shard


def test_a_cache_that_cannot_be_written_keeps_images_in_memory(spec, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SYMMETRY_CACHE", str(blocker))
    items = lazy_items("denoise", spec, max_images=2)
    eager = load_items("denoise", spec, max_images=2)
    a = PatchDataset(items, "denoise", patch_size=24, seed=0)
    b = PatchDataset(eager, "denoise", patch_size=24, seed=0)
    assert torch.equal(a.batch(range(4))[1], b.batch(range(4))[1])
    assert "keeping them in memory" in capsys.readouterr().err
