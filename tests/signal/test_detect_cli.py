"""`pulsestock detect` over real data: an ad exchange's hourly cost per thousand impressions
(NAB realAdExchange/exchange-4_cpm_results.csv, labelled anomaly windows)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from tests.helpers.shared import shared_dir

PULSESTOCK = str(Path(sys.executable).parent / "pulsestock")
NAB = shared_dir() / "data" / "nab_dev"
SERIES = "realAdExchange/exchange-4_cpm_results.csv"


def test_detect_scores_every_row_and_flags_the_labelled_spikes(tmp_path: Path) -> None:
    out = tmp_path / "scored.csv"
    subprocess.run(
        [
            PULSESTOCK,
            "detect",
            "--input",
            str(NAB / SERIES),
            "--timestamp-col",
            "timestamp",
            "--value-col",
            "value",
            "--output",
            str(out),
        ],
        check=True,
        timeout=60,
    )
    with open(NAB / SERIES, newline="") as source:
        rows = list(csv.DictReader(source))
    with open(out, newline="") as scored:
        result = list(csv.DictReader(scored))
    assert [r["timestamp"] for r in result] == [r["timestamp"] for r in rows]
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in result)
    alerts = [datetime.fromisoformat(r["timestamp"]) for r in result if r["alert"] == "1"]
    windows = [
        (datetime.fromisoformat(a), datetime.fromisoformat(b))
        for a, b in json.loads((NAB / "combined_windows.json").read_text())[SERIES]
    ]
    caught = [any(a <= t <= b for t in alerts) for a, b in windows]
    # its last two windows hold spikes of 20-30x the median: both must be caught
    assert caught[-2:] == [True, True], (alerts, windows)
    outside = [t for t in alerts if not any(a <= t <= b for a, b in windows)]
    assert len(outside) <= len(result) // 200, outside  # at most 5 per 1,000 rows


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
