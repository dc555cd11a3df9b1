"""The reproduction scripts in examples/ run end to end (tiny budgets) and write their outputs."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sb3_safe_frozen_lake")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_figure2_script_runs_and_reports_zero_violations(tmp_path):
    arguments = ["--agents", "2", "--episodes", "1", "--workers", "1", "--out", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "figure2_frozen_lake.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "exceeded tau = 0.1: 0 (must be 0)" in result.stdout
    with open(tmp_path / "figure2.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["agent"], row["episode"]) for row in rows] == [("0", "1"), ("1", "1")]
    assert all(float(row["max_expected_cost"]) <= 0.1 + 1e-9 for row in rows)
    assert (tmp_path / "figure2.png").stat().st_size > 10_000


def test_figure1_script_runs_every_method_and_the_safe_ones_never_violate(tmp_path):
    arguments = ["--seeds", "1", "--episodes", "60", "--window", "10", "--workers", "1", "--out", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "figure1_synthetic.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    with open(tmp_path / "figure1.csv") as handle:
        rows = list(csv.DictReader(handle))
    methods = {row["method"] for row in rows}
    assert len(methods) == 6 and len(rows) == 6 * 60
    for row in rows:
        if row["method"] in ("SLUCB-QVI", "LSVI-UCB (known gamma*)"):
            assert row["violations"] == "0"
    assert "wall" in result.stdout and (tmp_path / "figure1.png").exists()
