"""Real natural photographs (the clean Rain100L images, BSD): left-right symmetric, up-down not."""

import symmetry


def test_lr_flip_symmetric_ud_flip_not(shared_data):
    kwargs = dict(mesh=1.0, radius=8.0, windows=128, features=256, permutations=200, bootstrap=50, device="cpu")
    lr = symmetry.measure_dataset("rain100l", "flip", data_root=shared_data, split="test", **kwargs).summary().iloc[0]
    ud = symmetry.measure_dataset("rain100l", "flipud", data_root=shared_data, split="test", **kwargs).summary().iloc[0]
    assert lr.p_value >= 0.05, lr
    assert ud.p_value < 0.01 and ud.symmetry_error > 2 * ud.null_q95, ud
    assert ud.symmetry_error > 2 * max(lr.symmetry_error, lr.null_q95)
