"""Real natural photographs (the clean Rain100L images, BSD): left-right symmetric, up-down not."""

import symmetry


def test_lr_flip_symmetric_ud_flip_not(shared_data):
    kwargs = dict(mesh=1.0, radius=8.0, windows=128, features=256, permutations=200, bootstrap=50, device="cpu")
    lr = symmetry.measure_dataset("rain100l", "flip", data_root=shared_data, split="test", **kwargs).summary().iloc[0]
    ud = symmetry.measure_dataset("rain100l", "flipud", data_root=shared_data, split="test", **kwargs).summary().iloc[0]
    assert lr.p_value >= 0.05, lr
    assert ud.p_value < 0.01 and ud.symmetry_error > 2 * ud.null_q95, ud
    assert ud.symmetry_error > 2 * max(lr.symmetry_error, lr.null_q95)


def test_photos_preset_rejects_ud_flip_on_25_photos_not_lr_flip(shared_data):
    """The recommended setting (--preset photos) decides on 25 photographs (the first 25 of the training split):
    up-down flip rejected (adjusted p <= 0.01), left-right flip far from rejected; the same photos with every other
    one turned upside down (a sample of the flipud-invariant mixture) are not rejected."""
    kwargs = dict(preset="photos", data_root=shared_data, split="train", max_images=25, bootstrap=0, device="cpu")
    report = symmetry.measure_dataset("rain100l", "flip,flipud", **kwargs)
    assert report.verdict("flipud")["symmetric"] is False and report.verdict("flipud")["p_adjusted"] <= 0.01
    assert report.verdict("flip")["symmetric"] is True and report.verdict("flip")["p_adjusted"] > 0.2
    from symmetry.datasets import load_dataset
    from symmetry.sources import ImageSource

    photos = list(load_dataset("rain100l", data_root=shared_data, split="train"))[:25]
    mixed = [ImageSource(p.name, array=p.load().flip(-2) if i % 2 else p.load()) for i, p in enumerate(photos)]
    control = symmetry.measure_dataset(mixed, "flipud", preset="photos", bootstrap=0, device="cpu")
    assert control.verdict("flipud")["p_adjusted"] > 0.05
