"""The calibration experiment: its cells, the KS distance from uniform, its table, and a clean skip without data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from experiments import calibration
from experiments.runner import Context, SkipCell, load_config


def test_ks_distance_known_values_and_piled_p_values_are_far_from_uniform():
    assert calibration.ks_uniform(np.array([0.5])) == pytest.approx(0.5)
    grid = (np.arange(1, 201) - 0.5) / 200
    assert calibration.ks_uniform(grid) == pytest.approx(0.0025)
    piled = np.clip(grid * 0.3 + 0.7, 0, 1)  # every p-value above 0.7: a conservative test
    assert calibration.ks_uniform(piled) > 0.6


def test_table_counts_rejections_with_wilson_intervals():
    frame = pd.DataFrame(
        {
            "setting": "default",
            "source": "b100",
            "scale": 1.0,
            "group": ["flip"] * 20,
            "p_value": np.r_[[0.01], np.linspace(0.1, 1, 19)],
            "rejected": [True] + [False] * 19,
        }
    )
    row = calibration.table(frame).iloc[0]
    assert row["rejected"] == 1 and row["subsets"] == 20 and row["low"] < 0.05 < row["high"]
    uniform = frame.iloc[[0] * 200].assign(p_value=(np.arange(1, 201) - 0.5) / 200)
    assert calibration.verdict(uniform, {"alpha": 0.05}).endswith(": met)")
    piled = uniform.assign(p_value=0.7 + 0.3 * uniform["p_value"])  # the negative control: a conservative test
    assert "NOT met" in calibration.verdict(piled, {"alpha": 0.05})
    # a liberal test with a small KS distance: 40 of 400 p-values below 0.05 (twice alpha), the rest uniform above;
    # KS 0.05 passes, the family-wise interval (lower end about 0.066) excludes alpha: NOT met
    liberal = frame.iloc[[0] * 400].assign(
        p_value=np.r_[np.linspace(0.001, 0.049, 40), np.linspace(0.05, 1, 360)], setting="liberal"
    )
    row = calibration.table(liberal).iloc[0]
    assert row["ks"] <= 0.1 and row["fw_low"] > 0.05
    assert "NOT met" in calibration.verdict(liberal, {"alpha": 0.05})


def test_cells_cover_every_setting_source_and_size_subset_by_subset():
    config = load_config("calibration", "quick")
    cells = calibration.cells(config)
    per_subset = len(config["settings"]) * len(config["sources"]) * len(config["scales"])
    assert len(cells) == per_subset * config["subsets"] and config["subsets"] >= 50
    assert {c["subset"] for c in cells[:per_subset]} == {0}
    assert cells[0]["groups"] == "rot4,flip,flipud,dih4"


def test_skips_with_a_clear_message_without_the_photographs(tmp_path):
    cell = calibration.cells(load_config("calibration", "quick"))[0]
    with pytest.raises(SkipCell, match="not under the data root"):
        calibration.run_cell(cell, Context(device=torch.device("cpu"), data_root=tmp_path))
