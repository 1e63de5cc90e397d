"""`pulsestock forecast` and `pulsestock backtest` on small generated CSV files: the output's
shape and columns, the bucket taken from the file's own spacing (months, weeks, 5 minutes),
no lookahead (cutting the file right after an origin leaves that origin's rows unchanged),
determinism, every bad file refused with one stderr line naming its line, exit code 2 and no
output file, and a backtest report with every model and score. The runs call the CLI's
`main` in this process (the same parser, entry points and code); one bad file goes through
the installed `pulsestock` as a real process."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from pulsestock.cli import main
from pulsestock.forecast.domain.baselines import REFERENCES

PULSESTOCK = Path(sys.executable).parent / "pulsestock"


def demand(n: int, seed: int = 4) -> list[int]:
    """Intermittent daily-ish counts with a burst late on, seeded."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(1.2, n) * (rng.random(n) < 0.6)
    counts[int(n * 0.8) : int(n * 0.8) + 3] += 12
    return [int(c) for c in counts]


def write_csv(
    path: Path, rows: list[list[object]], header: tuple[str, ...] = ("day", "qty")
) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def daily(path: Path, n: int = 60, start: date = date(2011, 1, 1)) -> Path:
    values = demand(n)
    return write_csv(path, [[start + timedelta(days=i), v] for i, v in enumerate(values)])


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    """The CLI's exit code and stderr."""
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in argv])
    code = exited.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as source:
        return list(csv.DictReader(source))


def test_forecast_rows_follow_the_origins_the_horizon_and_the_quantiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series, out = daily(tmp_path / "s.csv"), tmp_path / "out.csv"
    code, err = run(
        capsys, "forecast", "--input", series, "--horizon", 5, "--origins", "every:10",
        "--quantiles", "0.95,0.05,0.5", "--output", out,
    )  # fmt: skip
    assert (code, err) == (0, "")
    with out.open() as source:
        assert source.readline().strip() == "origin,target,step,mean,q0.05,q0.5,q0.95"
    rows = read(out)
    # Origins: the 14th day (the default --min-history) and every 10th after it.
    origins = sorted({row["origin"] for row in rows})
    assert origins == ["2011-01-14", "2011-01-24", "2011-02-03", "2011-02-13", "2011-02-23"]
    assert len(rows) == 5 * 5
    for row in rows:
        step = int(row["step"])
        assert 1 <= step <= 5
        assert date.fromisoformat(row["target"]) == date.fromisoformat(row["origin"]) + timedelta(
            days=step
        )
        low, mid, high = (float(row[c]) for c in ("q0.05", "q0.5", "q0.95"))
        assert 0 <= low <= mid <= high
        assert float(row["mean"]) >= 0
    # The default origin is the last row: the forecast of what comes after the file.
    code, _ = run(capsys, "forecast", "--input", series, "--horizon", 3, "--output", out)
    assert code == 0
    assert [(r["origin"], r["target"]) for r in read(out)] == [
        ("2011-03-01", "2011-03-02"),
        ("2011-03-01", "2011-03-03"),
        ("2011-03-01", "2011-03-04"),
    ]


@pytest.mark.parametrize(
    ("times", "origin", "targets"),
    [
        # calendar months, given as each month's first day: across a year end
        (
            [f"{2010 + (m // 12)}-{m % 12 + 1:02d}-01" for m in range(10, 40)],
            "2013-04-01",
            ["2013-05-01", "2013-06-01", "2013-07-01"],
        ),
        # weeks
        (
            [(date(2011, 1, 3) + timedelta(weeks=i)).isoformat() for i in range(30)],
            "2011-07-25",
            ["2011-08-01", "2011-08-08", "2011-08-15"],
        ),
        # five minutes, with a zone and a space between date and time
        (
            [
                (
                    datetime.fromisoformat("2024-03-01 23:00:00+01:00") + timedelta(minutes=5 * i)
                ).isoformat(sep=" ")
                for i in range(30)
            ],
            "2024-03-02 01:25:00+01:00",
            ["2024-03-02 01:30:00+01:00", "2024-03-02 01:35:00+01:00", "2024-03-02 01:40:00+01:00"],
        ),
        # local midnight across the spring DST change: days on the wall clock
        (
            [f"2024-03-{d:02d}T00:00:00+01:00" for d in range(1, 31)]
            + ["2024-03-31T00:00:00+02:00", "2024-04-01T00:00:00+02:00"],
            "2024-04-01T00:00:00+02:00",
            ["2024-04-02T00:00:00+02:00", "2024-04-03T00:00:00+02:00", "2024-04-04T00:00:00+02:00"],
        ),
    ],
    ids=["monthly", "weekly", "5min", "daily-dst"],
)
def test_the_bucket_is_the_files_own_spacing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    times: list[str],
    origin: str,
    targets: list[str],
) -> None:
    values = demand(len(times))
    series = write_csv(tmp_path / "s.csv", [[t, v] for t, v in zip(times, values, strict=True)])
    out = tmp_path / "out.csv"
    code, err = run(capsys, "forecast", "--input", series, "--horizon", 3, "--output", out)
    assert (code, err) == (0, "")
    rows = read(out)
    assert {row["origin"] for row in rows} == {origin}
    assert [row["target"] for row in rows] == targets


@pytest.mark.parametrize("kind", ["rate", "cumulative"])
def test_cutting_the_file_after_an_origin_leaves_its_rows_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    values = demand(70)
    if kind == "cumulative":
        values = list(np.cumsum(values))
    heat = [round(float(h), 2) for h in np.random.default_rng(2).gamma(2.0, 5.0, 70)]
    start = datetime(2026, 11, 2)
    rows: list[list[object]] = [
        [(start + timedelta(hours=i)).isoformat(), v, h]
        for i, (v, h) in enumerate(zip(values, heat, strict=True))
    ]
    header = ("hour", "orders", "heat")
    full = write_csv(tmp_path / "full.csv", rows, header)
    common = ["--kind", kind, "--heat-col", "heat", "--horizon", 6, "--origins", "all"]
    assert run(capsys, "forecast", "--input", full, *common, "--output", tmp_path / "f.csv")[0] == 0
    by_origin: dict[str, list[dict[str, str]]] = {}
    for row in read(tmp_path / "f.csv"):
        by_origin.setdefault(row["origin"], []).append(row)
    # Cut right after several origins, including ones just before the burst.
    for cut in (20, 40, 55, 56, 57, 60):
        origin_row = rows[cut - 1]
        short = write_csv(tmp_path / f"cut{cut}.csv", rows[:cut], header)
        out = tmp_path / f"c{cut}.csv"
        assert run(capsys, "forecast", "--input", short, *common, "--output", out)[0] == 0
        mine = [row for row in read(out) if row["origin"] == origin_row[0]]
        assert mine, f"origin {origin_row[0]} missing from the cut file's output"
        assert mine == by_origin[str(origin_row[0])]


def test_the_same_file_gives_the_same_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series = daily(tmp_path / "s.csv")
    outputs = []
    for name in ("a.json", "b.json"):
        args = ["backtest", "--input", series, "--horizon", 7, "--origins", "every:7"]
        assert run(capsys, *args, "--output", tmp_path / name)[0] == 0
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]


def test_the_backtest_report_has_every_model_and_score(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series, out = daily(tmp_path / "s.csv", n=50), tmp_path / "report.json"
    code, err = run(
        capsys, "backtest", "--input", series, "--value-col", "qty", "--horizon", 7,
        "--min-history", 21, "--output", out,
    )  # fmt: skip
    assert (code, err) == (0, "")
    report = json.loads(out.read_text())
    assert report["input"]["bucket"] == "daily"
    assert report["origins"] == 50 - 21 - 7 + 1  # "all": each with its whole horizon in the file
    assert (report["first_origin"], report["last_origin"]) == ("2011-01-21", "2011-02-12")
    assert [m["model"] for m in report["models"]] == ["ours", *REFERENCES]
    for model in report["models"]:
        assert set(model["pinball"]) == {"0.1", "0.5", "0.9"}
        for score in ("crps", "coverage_80", "rmsse", "mase", "scaled_pinball"):
            assert isinstance(model[score], float)
        assert set(model["cumulative_log_ratio"]) == {"median_abs", "mean"}
    assert set(report["ours_minus_baseline"]) == set(REFERENCES)
    for scores in report["ours_minus_baseline"].values():
        assert set(scores) == {"rmsse", "mase", "crps", "scaled_pinball", "abs_log_ratio"}
        assert all(set(i) == {"mean", "low", "high"} for i in scores.values())


GOOD = [[f"2011-01-{d:02d}", d % 3] for d in range(1, 21)]


def edited(line: int, cells: list[object]) -> list[list[object]]:
    """GOOD with file line `line` (the header is line 1) replaced."""
    rows = [list(row) for row in GOOD]
    rows[line - 2] = cells
    return rows


@pytest.mark.parametrize(
    ("rows", "extra", "line", "says"),
    [
        (GOOD, ["--value-col", "units"], 1, "'units' is not in the header"),
        (edited(6, ["2011-01-03", 1]), [], 6, "before the previous row"),
        (GOOD[:4] + GOOD[3:], [], 6, "repeats the previous row"),
        (edited(7, ["2011-01-06", "nan"]), [], 7, "NaN"),
        (edited(8, ["2011-01-07", -2]), [], 8, "negative"),
        (edited(9, ["2011-01-08", ""]), [], 9, "empty"),
        (edited(10, ["2011-01-09", "lots"]), [], 10, "not a number"),
        (edited(11, ["2011-01-11", 1]), [], 11, "spacing"),
        (edited(12, ["yesterday", 1]), [], 12, "not an ISO 8601"),
        (GOOD[:9], [], 10, "--min-history needs 14"),
        (
            [[row[0], 10 + i] for i, row in enumerate(GOOD[:8])] + [["2011-01-09", 3], *GOOD[9:]],
            ["--kind", "cumulative"],
            10,
            "decreases from 17 to 3",
        ),
    ],
    ids=[
        "missing-column", "non-increasing", "duplicate", "nan", "negative-rate", "empty",
        "not-a-number", "irregular", "bad-timestamp", "too-short", "decreasing-cumulative",
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["forecast", "backtest"])
def test_a_bad_file_is_one_line_exit_2_and_no_output(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    rows: list[list[object]],
    extra: list[str],
    line: int,
    says: str,
) -> None:
    series = write_csv(tmp_path / "bad.csv", rows)
    out = tmp_path / "out"
    code, err = run(capsys, command, "--input", series, *extra, "--horizon", 3, "--output", out)
    assert code == 2
    assert err.count("\n") == 1, err
    assert f"bad.csv:{line}:" in err
    assert says in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == [series]  # no output, no temporary file left


def test_the_installed_command_refuses_a_bad_file(tmp_path: Path) -> None:
    """The `pulsestock` entry point as a user runs it (a real process): one line, exit 2."""
    bad = write_csv(tmp_path / "bad.csv", edited(5, ["2011-01-04", "NaN"]))
    done = subprocess.run(
        [PULSESTOCK, "backtest", "--input", bad, "--horizon", "2", "--output", tmp_path / "r.json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"pulsestock: configuration error: {bad}:5: 'qty' is NaN"]
    assert not (tmp_path / "r.json").exists()
