"""`iris sim` as an operator meets it: the help, the verdict naming the failed check, units,
the time series (`--csv`), the picture (`--plot`), the progress line, and runs that stay the
same runs however they are watched."""

from __future__ import annotations

import csv
import io
import json

import pytest

from simulations import cli, timeline
from simulations.cli import ALL_SCENARIOS, main

# A small partition: 40 nodes split for 10 s (about half a second of wall time).
# (A cut longer than the 8-10 s the ring takes to notice it, so that the series shows it.)
PARTITION = ["partition", "--nodes", "40", "--seed", "3", "--lookups", "200",
             "--partition-s", "15"]
PARTITION_DIGEST = "224b13b1b6563d65"
# Lookups over a network that loses 30% of all messages: one is lost after every way was
# tried, and leaf sets are not all exact at the end, so checks fail (nearly every run).
LOSSY_JOIN = ["join", "--nodes", "30", "--seed", "6", "--lookups", "300", "--loss", "0.3"]
LOSSY_JOIN_DIGEST = "028ffea9bb38b5b0"
# These digests were printed by the simulator before runs could be watched (--csv, --plot,
# --progress); a change to the protocol or to the simulator's randomness changes them, and
# then they are re-pinned on purpose. Watching must never change them.


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_describes_every_scenario_with_defaults_and_units(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["-h"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    listing = text.split("scenarios:", 1)[1]
    for name in ALL_SCENARIOS:
        line = next((ln for ln in listing.splitlines() if ln.startswith(f"  {name} ")), None)
        assert line is not None, f"{name} is not described in -h"
        assert len(line.split(None, 1)[1]) > 20  # a description, not just the name
    flat = " ".join(text.split())
    assert "--partition-s S partition, messaging-partition: how long the network stays " \
           "split, simulated seconds (default: 60.0)" in flat
    assert "(default: 1000)" in flat and "per simulated second" in flat
    assert "--csv FILE" in flat and "--plot FILE" in flat and "--progress" in flat


def test_a_failing_run_names_the_failed_check_and_its_threshold(capsys):
    code, out, err = run(capsys, *LOSSY_JOIN)
    assert code == 1
    assert "FAILED" in out
    assert "correct_ratio = 0.9967, wanted == 1 (routed lookups delivered at the key's true " \
           "root); lookups 300, wrong_root 0, lost 1" in out

    code, out, err = run(capsys, *LOSSY_JOIN, "--json")
    assert code == 1
    result = json.loads(out)  # stdout is the JSON object alone
    assert result["checks_passed"] is False and result["digest"] == LOSSY_JOIN_DIGEST
    failed = {f["check"]: f for f in result["failed_checks"]}
    assert failed["correct_ratio"]["value"] == pytest.approx(0.99667, abs=1e-4)
    assert failed["correct_ratio"]["op"] == "==" and failed["correct_ratio"]["threshold"] == 1.0
    assert failed["correct_ratio"]["context"] == {"lookups": 300, "wrong_root": 0, "lost": 1}
    assert "check failed: correct_ratio = 0.9967" in err  # and stderr says it in words


def test_a_passing_run_says_so_and_every_figure_has_a_unit(capsys):
    code, out, _ = run(capsys, *PARTITION, "--json")
    result = json.loads(out)
    assert code == 0 and result["checks_passed"] and result["failed_checks"] == []
    units = result["units"]
    assert units["correct_ratio"] == "fraction (0-1)"
    assert units["repair_s"] == "s (simulated)" and units["wall_s"] == "s (wall clock)"
    assert units["maintenance_msgs_per_node_s"] == "messages per node per simulated s"
    for key, value in result.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and key != "seed":
            assert key in units, f"{key} has no unit"
    code, out, _ = run(capsys, *PARTITION)
    assert f"passed all {result['checks_run']} checks" in out
    assert "s (simulated)" in out


def test_csv_writes_the_time_series(capsys, tmp_path):
    path = tmp_path / "series.csv"
    code, out, err = run(capsys, *PARTITION, "--json", "--csv", str(path))
    assert code == 0 and json.loads(out)["digest"] == PARTITION_DIGEST
    with path.open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == timeline.COLUMNS
        rows = list(reader)
    times = [float(r["t_s"]) for r in rows]
    assert times == sorted(times) and len(rows) > 30
    for r in rows:
        for column in ("leaf_exact_ratio", "leaf_side_exact_ratio", "table_fill_ratio",
                       "routing_correct_ratio"):
            assert 0.0 <= float(r[column]) <= 1.0
    phases = {r["phase"] for r in rows}
    assert {"joining", "partitioned", "healing", "done"} <= phases
    split = [r for r in rows if r["phase"] == "partitioned"]
    # The cut leaves entries naming unreachable nodes; the split is noticed (the leaf sets
    # are no longer those of the whole ring); after the heal every leaf set is right again.
    assert int(split[0]["table_unreachable_entries"]) > 0
    assert min(float(r["leaf_exact_ratio"]) for r in split) < 0.5
    assert any(r["leaf_side_exact_ratio"] != r["leaf_exact_ratio"] for r in split)
    assert float(rows[-1]["leaf_exact_ratio"]) == 1.0
    assert int(rows[-1]["table_unreachable_entries"]) == 0
    assert sum(int(r["lookups_issued"]) for r in rows) == 200
    assert sum(int(r["lookups_correct"]) for r in rows) == 200
    assert f"wrote {len(rows)} rows" in err


def test_plot_draws_a_png(capsys, tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib: pip install "
                        "'iris-overlay[plot]'")
    path = tmp_path / "partition.png"
    code, out, _ = run(capsys, *PARTITION, "--json", "--plot", str(path))
    assert code == 0 and json.loads(out)["digest"] == PARTITION_DIGEST
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000


def test_plot_without_matplotlib_fails_in_one_line_before_running(capsys, monkeypatch,
                                                                  tmp_path):
    from simulations import plot

    monkeypatch.setattr(plot, "unavailable", lambda: "--plot needs matplotlib, which is "
                        "not installed: pip install 'iris-overlay[plot]'")
    ran = []
    monkeypatch.setitem(ALL_SCENARIOS, "join", lambda opts: ran.append(opts))
    code, out, err = run(capsys, "join", "--plot", str(tmp_path / "p.png"))
    assert code == 2 and not ran and out == ""
    assert err.strip().splitlines() == [
        "python -m simulations: --plot needs matplotlib, which is not installed: "
        "pip install 'iris-overlay[plot]'"]
    code, _, err = run(capsys, "join", "--plot", str(tmp_path / "no" / "p.png"))
    assert code == 2 and "no directory" in err and not ran
    code, _, err = run(capsys, "join", "--plot", str(tmp_path / "p.gif"))
    assert code == 2 and ".png, .svg or .pdf" in err and not ran


def test_watching_a_run_does_not_change_it(capsys, tmp_path):
    """The digest printed for a fixed seed is the same with the time series recorded and the
    progress line on, and the same as before runs could be watched."""
    code, out, err = run(capsys, *LOSSY_JOIN, "--json", "--progress", "--csv",
                         str(tmp_path / "s.csv"))
    assert json.loads(out)["digest"] == LOSSY_JOIN_DIGEST
    plain = json.loads(run(capsys, *PARTITION, "--json", "--no-progress")[1])
    assert plain["digest"] == PARTITION_DIGEST


def test_progress_line_on_a_terminal():
    stream = io.StringIO()
    progress = timeline.Progress(stream, "churn 1000 nodes", tty=True)
    progress.first_after = 0.0
    line = progress.line(150.0, 2_500_000, timeline.Phase("churning", 100.0, None, 400.0), 12.0)
    assert line == ("churn 1000 nodes | churning [###.................]  17% | "
                    "simulated 150 s | 2.50M events | 12 s elapsed")
    line = progress.line(130.0, 10, timeline.Phase("repairing", 100.0), 1.0)
    assert "repairing for 30 s" in line
    progress._show("a line")
    progress.close()
    assert stream.getvalue() == "\r\x1b[Ka line\r\x1b[K"  # drawn in place, then wiped


def test_progress_goes_to_stderr_and_never_into_the_json(capsys, monkeypatch):
    monkeypatch.setattr(timeline.Progress, "__init__", _eager_progress_init)
    code, out, err = run(capsys, *PARTITION, "--json", "--progress")
    assert json.loads(out)["digest"] == PARTITION_DIGEST
    assert "partition 40 nodes | " in err and "finished" in err


_plain_init = timeline.Progress.__init__


def _eager_progress_init(self, stream, label, tty=None):
    _plain_init(self, stream, label, tty)
    self.first_after = 0.0
    self.interval = 0.0


def test_ctrl_c_is_one_line_and_status_130(capsys, monkeypatch):
    def interrupted(opts):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.ALL_SCENARIOS, "join", interrupted)
    code, out, err = run(capsys, "join", "--nodes", "10")
    assert code == 130 and out == "" and err == "python -m simulations: interrupted\n"
