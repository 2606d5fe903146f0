"""The simulator compiled with mypyc (`simulations.compiled`, `iris sim --compiled`).

The build is real (mypyc and the C compiler, about half a minute, once for the module): the
compiled modules must stay compilable, load in place of the sources only when asked, and run
the very same simulation, digest for digest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simulations import compiled

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compiled-cache")


def _sim(args: list[str], cache: Path) -> tuple[dict[str, object], str]:
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    env.pop(compiled.ENV, None)
    done = subprocess.run([sys.executable, "-m", "iris", "sim", *args, "--json"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result, done.stderr


@pytest.mark.slow
def test_compiled_run_is_the_same_run(cache: Path) -> None:
    args = ["join", "--nodes", "120", "--seed", "5", "--lookups", "500"]
    plain, _ = _sim(args, cache)
    first, said = _sim([*args, "--compiled"], cache)
    assert "compiling the simulator" in said
    again, said_again = _sim([*args, "--compiled"], cache)
    assert "compiling" not in said_again  # built once per version of the sources
    assert plain.get("compiled") is None
    assert first["compiled"] is True and again["compiled"] is True
    assert first["digest"] == plain["digest"] == again["digest"]
    assert first["checks_passed"] is True
    # The build holds extension modules of what it lists, and the rest as sources.
    (build,) = [p for p in (cache / "iris" / "compiled").iterdir() if (p / "BUILT").exists()]
    for module in compiled.COMPILED:
        stem = Path(module).with_suffix("")
        assert list(build.glob(f"{stem}.*.so")), module
    assert (build / "overlay" / "messages.py").exists()
    assert not (build / "build").exists()  # the C sources are not kept


def test_an_edited_source_is_a_new_build(tmp_path: Path) -> None:
    """A build is named by a digest of every source it is made of: an edit since means a new
    build, never the old extension loaded in place of the newer code."""
    for pkg in compiled.PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    before = compiled.source_digest(tmp_path)
    assert compiled.source_digest(tmp_path) == before
    node = tmp_path / "overlay" / "node.py"
    node.write_text(node.read_text() + "\n# edited\n")
    assert compiled.source_digest(tmp_path) != before


def test_sources_are_not_taken_for_a_build(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.delenv(compiled.ENV, raising=False)
    assert not compiled.loaded()
    monkeypatch.setenv(compiled.ENV, str(tmp_path))  # says compiled; the sources are loaded
    assert not compiled.loaded()


def test_a_failed_build_says_why(tmp_path: Path) -> None:
    for pkg in compiled.PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / "src" / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    node = tmp_path / "src" / "overlay" / "node.py"
    node.write_text(node.read_text() + "\nBROKEN: int = 'not an int'\n")
    with pytest.raises(compiled.BuildError, match="mypyc failed"):
        compiled.build(tmp_path / "src", tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())  # nothing half-built is left
