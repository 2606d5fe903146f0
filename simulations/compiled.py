"""The simulator compiled: the protocol cores and the engine built with mypyc, for big runs.

A simulated event runs about thirty Python calls spread over the overlay's modules (no one of
them holds much of the time: `docs/BENCHMARKS.md`), so the one lever on all of them at once is
to compile them. mypyc turns these modules, unchanged, into C extensions: the same code and the
same digests, 1.5 times the events per second at 10,000 nodes and 1.3 times at 100,000
(where an event's time is mostly memory).

The build is a copy, never the source tree: the packages `overlay` and `simulations` are copied
into a cache folder named by a digest of their sources, the modules in `COMPILED` are compiled
there, and a run that asks for it (`iris sim --compiled`, `scripts/bench_ring.py --compiled`)
starts itself again with that folder first on its path (`reexec`). A source edited since is a
new digest and so a new build: a stale extension is never loaded in place of newer code.

Needs mypy (which brings mypyc: `pip install -e '.[compiled]'`), a C compiler and the Python
headers. Modules that classes elsewhere subclass stay interpreted (`overlay.app`, the wire
messages and `simulations.workload`): mypyc's classes take no interpreted subclasses.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

PACKAGES = ("overlay", "simulations")
COMPILED = (
    "overlay/ack_delay.py",
    "overlay/config.py",
    "overlay/deadlines.py",
    "overlay/discovery.py",
    "overlay/ids.py",
    "overlay/leafset.py",
    "overlay/link_policy.py",
    "overlay/lost_peers.py",
    "overlay/node.py",
    "overlay/probe_loss.py",
    "overlay/probes.py",
    "overlay/proximity.py",
    "overlay/routing_rule.py",
    "overlay/routing_table.py",
    "overlay/transit.py",
    "simulations/connections.py",
    "simulations/engine.py",
    "simulations/formed.py",
    "simulations/nearest.py",
    "simulations/network.py",
)
ENV = "IRIS_SIM_COMPILED"  # set in a run started again on a build: the build's folder
KEEP = 3  # builds kept in the cache; older ones are removed
_MYPY_CONFIG = """[mypy]
python_version = 3.11
[mypy-msgpack,msgpack.*,sortedcontainers,sortedcontainers.*]
ignore_missing_imports = True
"""


class BuildError(RuntimeError):
    """mypyc could not build the copy; the message ends with its output."""


def source_root() -> Path:
    """The folder holding the packages this module was loaded with (in a build: the build)."""
    return Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "iris" / "compiled"


def _sources(root: Path) -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")
                  if "__pycache__" not in p.parts)


def source_digest(root: Path) -> str:
    """What a build is built from: every source file of the packages, the Python and the
    mypy that compile them."""
    try:
        from mypy.version import __version__ as mypy_version
    except ImportError:
        raise BuildError("needs mypy, which brings mypyc: pip install -e '.[compiled]'") from None

    h = hashlib.sha256(f"{sys.version}\0{mypy_version}\0".encode())
    for path in _sources(root):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def build(root: Path | None = None, cache: Path | None = None,
          announce: Callable[[str], object] = lambda line: None) -> Path:
    """The folder of the build of `root`'s sources, built first unless the cache has it
    (`announce` is told so: a build takes about half a minute)."""
    root = root or source_root()
    cache = cache or cache_root()
    target = cache / source_digest(root)
    if (target / "BUILT").exists():
        return target
    announce(f"compiling the simulator with mypyc into {target} (once per version of it)")
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / f"{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    try:
        for pkg in PACKAGES:
            shutil.copytree(root / pkg, work / pkg,
                            ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        target = cache / source_digest(work)  # (the sources as copied, if edited meanwhile)
        (work / "mypy.ini").write_text(_MYPY_CONFIG)
        done = subprocess.run([sys.executable, "-m", "mypyc", *COMPILED], cwd=work,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            raise BuildError(f"mypyc failed (exit {done.returncode}):\n{tail}")
        shutil.rmtree(work / "build", ignore_errors=True)  # the C sources and objects
        (work / "BUILT").write_text(target.name + "\n")
        try:
            work.rename(target)
        except OSError:
            if not (target / "BUILT").exists():
                raise
            # Another run built the same sources meanwhile, and may be running on them.
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _prune(cache, keep=target)
    return target


def _prune(cache: Path, keep: Path) -> None:
    """At most `KEEP` builds stay: each is a few megabytes, and every edit makes a new one."""
    builds = sorted((p for p in cache.iterdir() if (p / "BUILT").exists() and p != keep),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in builds[KEEP - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def reexec(folder: Path, argv: list[str]) -> NoReturn:
    """Start this process again as `python argv...`, the build's folder in `ENV`; `argv` puts
    the folder first on the path (`python -m` or a script would put the source tree first)."""
    env = dict(os.environ)
    env[ENV] = str(folder)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv], env)


def rerun_cli(folder: Path, args: list[str], prog: str) -> NoReturn:
    """`simulations.cli.main(args)` again, on the build in `folder`."""
    code = (f"import sys; sys.path.insert(0, {str(folder)!r}); "
            f"from simulations.cli import main; sys.exit(main({args!r}, prog={prog!r}))")
    reexec(folder, ["-c", code])


def loaded() -> bool:
    """Whether the modules in use are a build's compiled ones: the engine and the node core
    are extension modules loaded from the folder `ENV` names."""
    folder = os.environ.get(ENV)
    if not folder:
        return False
    import overlay.node
    import simulations.engine

    here = Path(folder).resolve()
    return all(Path(m.__file__ or "").suffix == ".so" and here in Path(m.__file__ or "").parents
               for m in (overlay.node, simulations.engine))
