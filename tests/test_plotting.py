"""Learning-curve helpers: binning over seeds, and the PNGs they write."""

from __future__ import annotations

import numpy as np
import pytest

from sb3_safe.common.plotting import binned_curves, plot_learning_curves, plot_seed_curves


def _history(pairs):
    return [{"timestep": t, "return": r, "cost": c, "length": 10.0} for t, r, c in pairs]


def test_binned_curves_average_within_bins_then_over_seeds():
    seed_a = _history([(10, 1.0, 4.0), (40, 3.0, 2.0), (60, 5.0, 0.0)])
    seed_b = _history([(20, 3.0, 6.0), (90, 7.0, 2.0)])
    curves = binned_curves([seed_a, seed_b], n_bins=2, total_steps=100)
    np.testing.assert_array_equal(curves["steps"], [50.0, 100.0])
    # Bin 1 (0, 50]: seed a mean return 2, seed b 3; bin 2: seed a 5, seed b 7.
    np.testing.assert_allclose(curves["return_mean"], [2.5, 6.0])
    np.testing.assert_allclose(curves["return_std"], [0.5, 1.0])
    np.testing.assert_allclose(curves["cost_mean"], [(3.0 + 6.0) / 2, (0.0 + 2.0) / 2])


def test_empty_bins_are_nan_not_errors():
    curves = binned_curves([_history([(10, 1.0, 0.0)])], n_bins=3, total_steps=90)
    assert curves["return_mean"][0] == 1.0 and np.isnan(curves["return_mean"][1:]).all()


def test_plots_are_written(tmp_path):
    history = _history([(10, 1.0, 4.0), (40, 3.0, 2.0)])
    single = plot_learning_curves(history, tmp_path / "one.png", cost_limit=3.0, title="t", smoothing=2)
    several = plot_seed_curves({"A": binned_curves([history], n_bins=2)}, tmp_path / "many.png", cost_limit=3.0)
    for path in (single, several):
        assert (tmp_path / path.split("/")[-1]).stat().st_size > 5000
    with pytest.raises(ValueError, match="No finished episodes"):
        plot_learning_curves([], tmp_path / "none.png")
