"""The command lines: `python -m simulations`, `iris sim`, and the README's code example."""

import json
import pathlib
import re
import subprocess
import sys

import pytest

from iris.cli import main as iris_main
from simulations.cli import main as sim_main

ROOT = pathlib.Path(__file__).resolve().parent.parent
REQUIRED = {"scenario", "nodes", "seed", "lookups", "correct_ratio", "mean_hops", "max_hops",
            "checks_passed", "maintenance_msgs_per_node_s", "wall_s", "events"}


def test_python_m_simulations_prints_one_json_object():
    out = subprocess.run(
        [sys.executable, "-m", "simulations", "join", "--nodes", "60", "--seed", "3",
         "--lookups", "500", "--json"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    result = json.loads(out)
    assert result.keys() >= REQUIRED
    assert result["scenario"] == "join" and result["nodes"] == 60 and result["seed"] == 3
    assert result["checks_passed"] is True and result["correct_ratio"] == 1.0


@pytest.mark.parametrize("scenario", ["mass-failure", "partition"])
def test_repair_scenarios_report_repair_time(scenario, capsys):
    code = iris_main(["sim", scenario, "--nodes", "80", "--lookups", "300", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert REQUIRED | {"repair_s"} <= result.keys()
    assert result["repair_s"] is not None


def test_readable_report(capsys):
    assert sim_main(["join", "--nodes", "40", "--lookups", "200"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("scenario join: 40 nodes, seed 1")
    assert re.search(r"correct_ratio\s+1", out)


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        sim_main(["join", "--nodes", "1"])
    assert "--nodes must be at least 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sim_main(["join", "--loss", "1.5"])


def test_readme_code_examples_run():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)

    def block(marker):
        """The one example that holds `marker`."""
        (found,) = [code for code in blocks if marker in code]
        return found

    embedding, faults = block("import iris\n\nclass Echo"), block("iris.testing.local_nodes")
    relay_client, sans_io = block("RelayClient.open"), block("OverlayNode(")
    aio, sync = block("asyncio.run(main())"), block("iris.sync.open_node")
    assert len(blocks) == 6, "a new example: run it here too"
    out = subprocess.run([sys.executable, "-c", embedding], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert "b'echo: hi'" in out and "event: b'an event'" in out and "no such cluster" in out
    assert "survey: 1 of 1 answered" in out
    out = subprocess.run([sys.executable, "-c", faults], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert "across the partition: no answer" in out and "after the heal: b'x'" in out
    out = subprocess.run([sys.executable, "-c", relay_client], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert out.strip() == "b'HELLO'"
    out = subprocess.run([sys.executable, "-c", sans_io], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert "reached its root after 1 hops" in out
    for code in (aio, sync):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                             text=True, check=True, timeout=60).stdout
        assert "b'echo: hi'" in out


def test_readme_opens_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[1].endswith("pip install -e . && iris demo")
    assert lines[4].endswith("pip install -e '.[test]' && python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet -e '.[test]'" in ci and "python -m pytest" in ci
