"""Properties of the symmetry-error estimator on synthetic data whose symmetry is known by construction."""

import numpy as np
import pytest
import torch

import symmetry
from symmetry.estimators import (
    MMDStatistics,
    MomentStatistics,
    gaussian_distance,
    holm,
    min_p_aggregate,
    multiplication_table,
    p_value,
)
from symmetry.features import RandomFourierFeatures, image_windows
from symmetry.settings import Settings, window_scale
from symmetry.synthetic import make_fields
from symmetry.transforms import disk_offsets

# a fixed kernel of L2 width 2.5 at radius 6 (bandwidth is in standardised units: sigma / window_scale(radius))
FAST = dict(
    radius=6.0,
    windows=96,
    features=256,
    bandwidth=2.5 / window_scale(6.0),
    permutations=200,
    bootstrap=100,
    device="cpu",
)


def worst(report, mesh=1.0):
    row = report.summary("worst")
    return row[row["mesh"] == mesh].iloc[0]


@pytest.fixture(scope="module")
def isotropic():
    return make_fields("isotropic", n=48, size=48)


@pytest.mark.parametrize("group", ["rot4", "rot8", "flip"])
def test_isotropic_set_is_inside_its_null(isotropic, group):
    r = worst(symmetry.measure_dataset(isotropic, group, mesh=1.0, **FAST))
    assert r.p_value >= 0.05 and r.symmetry_error < r.null_q95


def test_rot4_symmetric_set_is_not_rot8_symmetric():
    data = make_fields("kfold", n=64, size=48, k=4, kappa=30, mu=22.5)
    r4 = worst(symmetry.measure_dataset(data, "rot4", mesh=1.0, **FAST))
    r8 = worst(symmetry.measure_dataset(data, "rot8", mesh=1.0, **FAST))
    assert r4.p_value >= 0.05 and r4.symmetry_error < r4.null_q95
    assert r8.p_value < 0.01 and r8.symmetry_error > 3 * r8.null_q95


def test_error_grows_with_anisotropy():
    eps = [
        worst(
            symmetry.measure_dataset(make_fields("vonmises", n=32, size=48, kappa=k), "rot4", mesh=1.0, **FAST)
        ).symmetry_error
        for k in (0.0, 1.0, 4.0, 16.0)
    ]
    assert all(a < b for a, b in zip(eps, eps[1:])), eps


def test_dih4_closure_reads_as_dih4_symmetric():
    from symmetry.sources import Dataset, augment

    base = Dataset(name="vonmises", sources=make_fields("vonmises", n=12, size=48, kappa=8.0), description="")
    raw = worst(symmetry.measure_dataset(base, "dih4", mesh=1.0, **FAST))
    closed = worst(symmetry.measure_dataset(augment(base, "dih4"), "dih4", mesh=1.0, **FAST))
    assert raw.p_value < 0.01
    assert closed.p_value >= 0.05 and closed.symmetry_error < closed.null_q95


@pytest.mark.slow  # 47 s: two rot8 measurements of 32 fields at four meshes (make test-slow)
def test_mesh_fit_recovers_known_eps0():
    """eps(h) = eps0 + c h^2 fitted on interpolated windows recovers the exact-transform value.

    The reference eps0 is the same estimator with analytically transformed windows (no
    interpolation) at the finest mesh; tolerance 10% of it plus 10% of the noise floor.
    """
    data = make_fields("vonmises", n=32, size=48, kappa=4.0)
    meshes = (2.0, 1.5, 1.0, 0.75)
    r = symmetry.measure_dataset(data, "rot8", mesh=meshes, **FAST)
    exact = symmetry.measure_dataset(data, "rot8", mesh=meshes, exact=True, **FAST)
    known = worst(exact, 0.75).symmetry_error
    fit = r.fit("worst")
    assert known > 3 * worst(exact, 0.75).null_q95  # a clearly non-zero eps0 to recover
    assert abs(fit["eps0"] - known) <= 0.1 * known + 0.1 * worst(r, 0.75).null_q95
    assert fit["eps0_ci_low"] <= known <= fit["eps0_ci_high"]


def test_streaming_equals_one_shot_and_shards_merge():
    data = make_fields("vonmises", n=10, size=40, kappa=4.0)
    s = Settings(
        radius=5.0, windows=32, features=128, bandwidth=0.2, permutations=50, bootstrap=50, seed=3, kernels="single"
    )
    assert s == Settings.from_options(**s.__dict__)
    group = symmetry.get_group("rot8")
    report = symmetry.measure_dataset(data, group, mesh=1.0, dtype=torch.float64, **{**s.__dict__, "device": "cpu"})

    # one-shot reference: every window's features at once, then the U-statistic over images
    rff = RandomFourierFeatures.for_run(s.features, 1, s.bandwidth * window_scale(s.radius), s.seed)
    w = rff.weights(disk_offsets(s.radius, 1.0), 1.0)
    z = torch.stack(
        [
            rff(image_windows(src, i, [1.0], group.matrices(), s, dtype=torch.float64)[0].full(), w)
            for i, src in enumerate(data)
        ]
    )  # (N, G, M, D)
    d = (z - z[:, :1]).sum(2)  # (N, G, D)
    m = s.windows
    total = d.sum(0)
    eps = ((total**2).sum(-1) - (d**2).sum((0, 2))) / ((len(data) * m) ** 2 - len(data) * m * m)
    got = report.to_frame().set_index("statistic")
    for k, name in enumerate(group.names[1:], start=1):
        assert got.loc[name, "symmetry_error"] == pytest.approx(float(eps[k]), rel=1e-9, abs=1e-15)

    # sharded accumulation (odd / even images) merged equals the single pass
    shards = [MMDStatistics.for_group(group, s.features, 50, 50, s.seed) for _ in range(2)]
    single = MMDStatistics.for_group(group, s.features, 50, 50, s.seed)
    for i in range(len(data)):
        shards[i % 2].add(i, d[i], m)
        single.add(i, d[i], m)
    shards[0].merge(shards[1])
    a, b = shards[0].estimate(), single.estimate()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-10, atol=1e-14)


def test_gaussian_distance_known_values():
    mu, cov = torch.zeros(3, dtype=torch.float64), torch.diag(torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64))
    assert float(gaussian_distance(mu, cov, mu, cov)) == pytest.approx(0.0, abs=1e-10)
    # diagonal Gaussians: |mu1 - mu2|^2 + sum (s1 - s2)^2
    cov2 = torch.diag(torch.tensor([4.0, 4.0, 1.0], dtype=torch.float64))
    mu2 = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    assert float(gaussian_distance(mu, cov, mu2, cov2)) == pytest.approx(5.0 + 1.0 + 0.0 + 4.0)


def test_frechet_is_near_zero_for_quarter_turns_of_closed_set():
    """Closing a set under rot4 takes its Frechet distances from ~2.4 to sampling noise (~0.04), 60x smaller."""
    from symmetry.sources import Dataset, augment

    base = Dataset(name="v", sources=make_fields("vonmises", n=4, size=40, kappa=4.0), description="")
    options = dict(mesh=1.0, frechet=True, **{**FAST, "windows": 256})
    raw = symmetry.measure_dataset(base, "rot4", **options).summary("worst").iloc[0]
    closed = symmetry.measure_dataset(augment(base, "rot4"), "rot4", **options).summary("worst").iloc[0]
    assert raw.frechet_distance > 1.0
    assert 0 <= closed.frechet_distance < 0.05 * raw.frechet_distance
    assert raw.w2_upper >= raw.frechet_distance and closed.w2_upper >= closed.frechet_distance  # a bracket


def test_w2_bracket_equals_the_shift_for_windows_moved_by_a_constant():
    """Windows on the disk lattice (radius 6, mesh 0.5, scaled by h) and the same windows plus a constant c:
    W2^2 is the squared image norm of the shift, c^2 h^2 P = c^2 x (the window's area); both bounds give it."""
    radius, h, c = 6.0, 0.5, 0.3
    points = len(disk_offsets(radius, h))
    g = torch.Generator().manual_seed(1)
    stats = MomentStatistics(2, points)
    for _ in range(3):  # three images
        w = h * torch.randn(64, points, generator=g, dtype=torch.float64)
        stats.add(torch.stack([w, w + c * h]))
    known = c**2 * h**2 * points
    assert known == pytest.approx(c**2 * np.pi * radius**2, rel=0.03)  # P h^2: the Riemann area of the disk
    assert float(stats.distances()[1]) == pytest.approx(known, rel=1e-6)
    assert float(stats.upper_bounds()[1]) == pytest.approx(known, rel=1e-9)
    assert float(stats.upper_bounds()[0]) == pytest.approx(0.0, abs=1e-10)  # identity: zero up to rounding


def test_w2_bracket_of_two_gaussian_window_laws():
    """N(0, diag(1, 4, 9)) against N((1, 0, 2), diag(4, 4, 1)): W2^2 = 5 + 1 + 0 + 4 = 10; in 1-D
    N(0, 1) against N(2, 9): W2^2 = 4 + (3 - 1)^2 = 8. The Gelbrich bound estimates it (plug-in), the
    assignment bound lies above it (an upper bound in expectation, tight in 1-D)."""
    g = torch.Generator().manual_seed(0)
    f64 = torch.float64
    cases = [
        (
            torch.tensor([0.0, 0, 0]),
            torch.tensor([1.0, 2, 3]),
            torch.tensor([1.0, 0, 2]),
            torch.tensor([2.0, 2, 1]),
            10,
        ),
        (torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([3.0]), 8),
    ]
    for mu1, sd1, mu2, sd2, known in cases:
        stats = MomentStatistics(2, len(mu1))
        for _ in range(100):  # 100 "images" of 256 windows
            x = mu1 + sd1 * torch.randn(256, len(mu1), generator=g, dtype=f64)
            y = mu2 + sd2 * torch.randn(256, len(mu1), generator=g, dtype=f64)
            stats.add(torch.stack([x, y]))
        lower, upper = float(stats.distances()[1]), float(stats.upper_bounds()[1])
        assert lower == pytest.approx(known, rel=0.05)
        assert known * 0.98 <= upper <= known * (1.03 if len(mu1) == 1 else 1.25)


class _Scaled:
    """An image source with its intensities multiplied by ``factor``."""

    def __init__(self, source, factor: float):
        self.source, self.factor, self.name = source, factor, f"{source.name}*{factor:g}"

    def at_mesh(self, mesh):
        return self.factor * self.source.at_mesh(mesh)


def test_fixed_kernel_is_the_same_for_every_dataset_and_the_median_rule_is_not():
    """Doubling every intensity: the median rule doubles sigma (eps unchanged, not comparable), the fixed kernel
    keeps sigma = s * sqrt(pi) * radius (eps changes: it sees the larger contrast)."""
    data = make_fields("vonmises", n=6, size=40, kappa=4.0)
    brighter = [_Scaled(src, 2.0) for src in data]
    small = dict(mesh=1.0, radius=5.0, windows=32, features=64, permutations=20, bootstrap=0, device="cpu")
    a, b = (symmetry.measure_dataset(d, "rot4", **small) for d in (data, brighter))
    assert b.meta["bandwidth"] == pytest.approx(2 * a.meta["bandwidth"], rel=1e-9)
    assert a.meta["bandwidth_mode"] == "median" and a.meta["bandwidth_std"] == a.meta["bandwidth"] / window_scale(5)
    assert b.symmetry_error() == pytest.approx(a.symmetry_error(), rel=1e-6, abs=1e-12)
    a, b = (symmetry.measure_dataset(d, "rot4", bandwidth=0.3, **small) for d in (data, brighter))
    assert a.meta["bandwidth"] == b.meta["bandwidth"] == pytest.approx(0.3 * np.sqrt(np.pi) * 5.0)
    assert a.meta["bandwidth_mode"] == "fixed" and a.meta["bandwidth_std"] == pytest.approx(0.3)
    assert abs(b.symmetry_error() - a.symmetry_error()) > 0.1 * abs(a.symmetry_error())


def test_checkpoint_resume_matches_uninterrupted(tmp_path):
    data = make_fields("vonmises", n=20, size=40, kappa=4.0)
    kwargs = dict(mesh=(2.0, 1.0), **{**FAST, "windows": 32})
    full = symmetry.measure_dataset(data, "rot4", **kwargs)

    class Interrupt:  # the 14th image stops the run as Ctrl-C would
        name = data[13].name

        def at_mesh(self, mesh):
            raise KeyboardInterrupt

    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        symmetry.measure_dataset(data[:13] + [Interrupt()] + data[14:], "rot4", checkpoint=ckpt, **kwargs)
    assert ckpt.exists()
    resumed = symmetry.measure_dataset(data, "rot4", checkpoint=ckpt, **kwargs)
    np.testing.assert_allclose(resumed.to_frame()["symmetry_error"], full.to_frame()["symmetry_error"], rtol=1e-12)
    assert resumed.to_frame()["p_value"].tolist() == full.to_frame()["p_value"].tolist()


def test_holm_known_values_and_nan_passthrough():
    got = holm([0.01, 0.04, 0.03, float("nan")])
    np.testing.assert_allclose(got[:3], [0.03, 0.06, 0.06])
    assert np.isnan(got[3])


@pytest.mark.parametrize("name", ["rot4", "rot8", "dih4", "flipud"])
def test_multiplication_table_composes_matrices(name):
    group = symmetry.get_group(name)
    table, mats = multiplication_table(group), group.matrices()
    for a in range(len(group)):
        for b in range(len(group)):
            assert torch.allclose(mats[a] @ mats[b], mats[table[a, b]], atol=1e-12)


def test_randomisation_null_of_an_image_is_its_regrouped_differences():
    """One image: null draw with element B adds d(AB) - d(B) for every A (the windows of pi_B x)."""
    group = symmetry.get_group("dih4")
    stats = MMDStatistics.for_group(group, 3, 40, 0, seed=5)
    d = torch.randn(len(group), 3, dtype=torch.float64)
    d[0] = 0  # the identity row of a difference is zero
    stats.add(0, d, 10)
    stats.flush()
    table = multiplication_table(group)
    for b in range(stats.permutations):
        rows = stats.perm[b]
        B = next(k for k in range(len(group)) if torch.allclose(rows, d[table[:, k]] - d[k]))
        assert torch.allclose(stats.perm_dd[b], ((d[table[:, B]] - d[B]) ** 2).sum(-1))


class _WholeImage:
    """A source that hands out whole rasters (``at_mesh``), so windows are cut from the full upsampled image."""

    def __init__(self, source):
        self.name, self.source = source.name, source

    def at_mesh(self, mesh):
        return self.source.at_mesh(mesh)


@pytest.mark.parametrize("mesh", [0.5, 1 / 3])
def test_patch_upsampling_equals_whole_image_upsampling(mesh):
    """At h < 1 only the patches under the windows are upsampled; the windows equal those of the whole raster."""
    from symmetry.sources import ImageSource

    rng = np.random.default_rng(0)
    source = ImageSource("im", array=torch.from_numpy(rng.random((2, 37, 41))))
    s = Settings(radius=5.0, windows=40, seed=1)
    mats = symmetry.get_group("rot8").matrices()
    patches = image_windows(source, 3, [mesh], mats, s, dtype=torch.float64)[0].full()
    whole = image_windows(_WholeImage(source), 3, [mesh], mats, s, dtype=torch.float64)[0].full()
    assert patches.shape == whole.shape
    torch.testing.assert_close(patches, whole, rtol=0, atol=1e-12)


@pytest.mark.parametrize("group", ["rot8", "rot16", "dih8"])
def test_coset_windows_equal_direct_interpolation(group):
    """One interpolation per coset of D4, lattice permutations for the rest: the windows of direct sampling."""
    from symmetry.features import _element_windows
    from symmetry.transforms import interpolate, window_positions

    rng = np.random.default_rng(2)
    image = torch.from_numpy(rng.random((1, 40, 40)))
    mats = symmetry.get_group(group).matrices()
    s = Settings(radius=4.0)
    offsets = disk_offsets(4.0, 1.0)
    pix = torch.from_numpy(rng.uniform(10, 30, (16, 2)))
    got = _element_windows(image, pix, offsets, mats, s, 1.0, "cpu", torch.float64).full()
    rows, cols = window_positions(pix, offsets, mats)
    direct = interpolate(image, rows, cols, "bicubic").permute(1, 2, 0, 3)
    direct = (direct - direct.mean(-1, keepdim=True)).flatten(-2)
    torch.testing.assert_close(got, direct, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mesh", [1.0, 0.5])
def test_orbit_features_of_a_permuted_window_are_its_features_permuted(mesh):
    """z(w_{QA}) = z(w_A)[perm_q] for every D4 element Q, to rounding; so the kernel is exactly D4-invariant."""
    from symmetry.features import feature_permutations, orbit_matrices
    from symmetry.transforms import lattice_permutations

    rng = np.random.default_rng(4)
    offsets = disk_offsets(3.0, mesh)
    rff = RandomFourierFeatures(64, 2, 0.7, seed=5)
    weights = rff.weights(mesh * offsets, mesh)
    w = torch.from_numpy(rng.normal(size=(6, 2, len(offsets))))  # (M, C, P)
    z = rff(w.flatten(-2), weights)
    perms = feature_permutations(64)
    assert sorted(perms[3].tolist()) == list(range(64)) and perms[0].tolist() == list(range(64))
    for q, lattice in enumerate(lattice_permutations(offsets, orbit_matrices())):
        moved = rff(w[..., lattice].flatten(-2), weights)  # w_{QA}(p) = w_A(Q^-1 p)
        torch.testing.assert_close(moved, z[:, perms[q]], rtol=0, atol=1e-12)
        gram = moved @ rff(w[:3, :, lattice].flatten(-2), weights).T
        torch.testing.assert_close(gram, z @ z[:3].T, rtol=0, atol=1e-12)  # k(Qw, Qw') = k(w, w')


def test_orbit_features_need_a_multiple_of_eight():
    with pytest.raises(ValueError, match="multiple of 8"):
        RandomFourierFeatures(12, 1, 1.0, seed=0)
    with pytest.raises(symmetry.errors.UsageError, match="multiple of 8"):
        Settings.from_options(features=100)


def _filled(images: int, flush_every: int | None, permutations: int = 97) -> MMDStatistics:
    """Statistics of ``images`` random difference sums, flushed every ``flush_every`` images (None: never)."""
    group = symmetry.get_group("rot4")
    stats = MMDStatistics.for_group(group, 16, permutations, 11, seed=3)
    gen = torch.Generator().manual_seed(0)
    for n in range(images):
        d = torch.randn(len(group), 16, generator=gen, dtype=torch.float64)
        d[0] = 0
        stats.add(n, d, 5 + n)
        if flush_every and (n + 1) % flush_every == 0:
            stats.flush()
    return stats


@pytest.mark.parametrize("permutations", [97, 150])  # 7 x 4^2 = 112: chunk by chunk, then by Gram matrices
def test_estimate_folds_pending_images_without_changing_the_stored_sums(permutations):
    """estimate() with images pending (folded on the fly: chunk by chunk, or by Gram matrices when K G^2 < B) equals
    estimate() after flush(), stored sums untouched; dropping the pending images (the negative control) changes
    the null and the bootstrap."""
    pending = _filled(7, None, permutations)
    flushed, partly = _filled(7, 1, permutations), _filled(7, 3, permutations)
    assert pending.perm is None and len(pending._pending) == 7
    got = pending.estimate()
    assert pending.perm is None and len(pending._pending) == 7  # nothing folded in by estimate
    for other in (flushed, partly):
        want = other.estimate()
        for key in ("eps", "null", "boot"):
            torch.testing.assert_close(got[key], want[key], rtol=1e-12, atol=1e-14)
    dropped = _filled(7, 3, permutations)
    dropped._pending.clear()  # the last image never reaches the null or the bootstrap
    broken = dropped.estimate()
    assert not torch.allclose(broken["null"], got["null"]) and not torch.allclose(broken["boot"], got["boot"])


def test_the_pilot_images_are_decoded_once(tmp_path, monkeypatch):
    """A measurement with the median bandwidth decodes every file once: the bandwidth rule's images are held for
    the pass over the images. Negative control: without the hold the first 8 images are decoded twice more."""
    from PIL import Image

    import symmetry.measurement as measurement
    import symmetry.sources as sources

    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray((rng.random((40, 44)) * 255).astype(np.uint8)).save(tmp_path / f"{i:02d}.png")
    reads: list[str] = []
    original = sources.read_image
    monkeypatch.setattr(
        sources, "read_image", lambda path, *a, **k: (reads.append(path.name), original(path, *a, **k))[1]
    )
    options = dict(mesh=1.0, radius=4.0, windows=8, features=16, permutations=20, bootstrap=0)
    held = measurement.measure_dataset(f"folder:{tmp_path}", "rot4", **options)
    assert sorted(reads) == sorted(f"{i:02d}.png" for i in range(10))
    reads.clear()
    monkeypatch.setattr(measurement, "_decoded", lambda source: source)
    again = measurement.measure_dataset(f"folder:{tmp_path}", "rot4", **options)
    assert len(reads) == 10 + 2 * 8
    assert held.to_frame()["symmetry_error"].tolist() == again.to_frame()["symmetry_error"].tolist()


def test_null_draws_equal_to_the_observation_up_to_rounding_count_as_ties(monkeypatch):
    """A draw that equals the observation in exact arithmetic (all images re-transformed by the identity) but
    differs by rounding counts as a tie in p_value and in min_p_aggregate, whichever side the rounding fell on.
    Negative control: with no tolerance the rounding below the observation drops the tie and changes the p."""
    import symmetry.estimators as est

    observed = 0.004399146034557729
    null = np.array([observed * (1 - 2e-16), 0.001, 0.002, 0.01])  # one tie (rounded down), one larger draw
    assert p_value(observed, null) == 3 / 5
    p, raw, adjusted = min_p_aggregate([observed], null[:, None])
    assert raw[0] == 3 / 5 and p == adjusted[0]
    monkeypatch.setattr(est, "TIES", 0.0)
    assert p_value(observed, null) == 2 / 5
