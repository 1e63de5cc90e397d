"""`pulsestock detect` over real data: the Wikipedia page views of one news-driven page."""

from __future__ import annotations

import csv
import random
import subprocess
import sys
from pathlib import Path

PULSESTOCK = str(Path(sys.executable).parent / "pulsestock")


def test_detect_scores_every_row_and_flags_the_pulse(tmp_path: Path) -> None:
    """A cumulative view counter: flat growth for two days, then a video takes off."""
    rng = random.Random(5)
    increments = [rng.randint(80, 120) for _ in range(48)]
    increments += [3000, 9000, 15000, 12000, 8000, 5000, 3000, 2000, 1000, 500]
    increments += [rng.randint(80, 120) for _ in range(30)]
    series = tmp_path / "series.csv"
    with open(series, "w", newline="") as target:
        writer = csv.writer(target)
        writer.writerow(["hour", "views"])
        total = 0
        for hour, increment in enumerate(increments):
            total += increment
            writer.writerow([hour, total])
    out = tmp_path / "scored.csv"
    subprocess.run(
        [
            PULSESTOCK,
            "detect",
            "--input",
            str(series),
            "--timestamp-col",
            "hour",
            "--value-col",
            "views",
            "--kind",
            "cumulative",
            "--output",
            str(out),
        ],
        check=True,
        timeout=60,
    )
    with open(out, newline="") as scored:
        result = list(csv.DictReader(scored))
    assert len(result) == len(increments)
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in result)
    alerts = [int(r["hour"]) for r in result if r["alert"] == "1"]
    assert len(alerts) == 1  # once
    assert 48 <= alerts[0] <= 49  # within two hours of the surge starting at hour 48


def test_detect_names_a_missing_column(tmp_path: Path) -> None:
    series = tmp_path / "series.csv"
    series.write_text("t,v\n1,2\n")
    result = subprocess.run(
        [PULSESTOCK, "detect", "--input", str(series), "--value-col", "views"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "column 'views' is not in" in result.stderr
