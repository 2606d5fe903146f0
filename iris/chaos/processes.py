"""The chaos run's processes: started, paused, killed, restarted, and always removed.

Each process starts in a session of its own, so a Ctrl-C at the terminal reaches only the
harness (which then stops them in order), and stopping one means signalling its whole group.
Each also gets SIGKILL from the kernel if the harness dies without cleaning up (Linux's parent
death signal), so a killed harness leaves no nodes behind. A paused process cannot act on
SIGTERM: it is continued first.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Process:
    name: str
    argv: list[str]
    log_path: str
    popen: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: list[float] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


class Processes:
    """Every process of one run, by name."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.all: dict[str, Process] = {}

    def start(self, name: str, argv: list[str], log_path: str) -> Process:
        proc = self.all.get(name) or Process(name, argv, log_path)
        self.all[name] = proc
        with open(log_path, "ab") as log:
            proc.popen = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True,
                                          preexec_fn=_die_with_parent)
        proc.paused = False
        proc.starts.append(time.time())
        return proc

    def restart(self, name: str) -> Process:
        proc = self.all[name]
        return self.start(name, proc.argv, proc.log_path)

    def pause(self, name: str) -> None:
        self._signal(self.all[name], signal.SIGSTOP)
        self.all[name].paused = True

    def resume(self, name: str) -> None:
        self._signal(self.all[name], signal.SIGCONT)
        self.all[name].paused = False

    def kill(self, name: str) -> None:
        proc = self.all[name]
        self._signal(proc, signal.SIGKILL)
        if proc.popen is not None:
            proc.popen.wait()
        proc.paused = False

    def stop(self, names: list[str], grace: float) -> None:
        """SIGTERM (after SIGCONT) to each, and SIGKILL to what still runs after `grace`."""
        procs = [self.all[n] for n in names if n in self.all]
        for proc in procs:
            if proc.running:
                self._signal(proc, signal.SIGCONT)
                self._signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            if proc.popen is None:
                continue
            try:
                proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.popen.wait()
            proc.paused = False

    def stop_all(self, grace: float = 3.0) -> None:
        self.stop(list(self.all), grace)

    @staticmethod
    def _signal(proc: Process, signum: int) -> None:
        if proc.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(proc.popen.pid, signum)
