"""Restarting processes that cannot phase-restart: drain (Sidekiq, cron) and signal:<NAME>.

drain: send the quiet signal (TSTP for Sidekiq: stop taking new jobs), wait until the process
is idle (a Sidekiq-style title says "[0 of N busy]"), exits by itself, or drain-seconds pass,
send TERM (Sidekiq finishes or requeues what is in flight), then wait for the kubelet to
start the container again; it comes back on the new code because `current` already points
at it. The pod, its volume and its IP stay.

signal:<NAME>: for servers that reload on a signal (gunicorn on HUP): send it, and check the
process is still there to have done so.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from customer_friendly.agent import puma
from customer_friendly.contract import SIGNAL_NAMES

# Sidekiq (and workers that copy it) show their load in the process title: "[3 of 10 busy]".
BUSY_TITLE = re.compile(r"\[(\d+) of (\d+) busy\]")

SIGNALS = {name: getattr(signal, f"SIG{name}") for name in SIGNAL_NAMES}


@dataclass(frozen=True)
class Target:
    """How to find the process: a pidfile, else a title pattern, else the Puma master."""

    pattern: str | None = None
    pidfile: Path | None = None


def find(target: Target, processes: list[puma.Process], own_pid: int) -> puma.Process | None:
    """The oldest process matching the target (not the agent itself). Pure."""
    if target.pidfile is not None:
        try:
            pid = int(target.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return next((p for p in processes if p.pid == pid), None)
    if target.pattern is None:
        view = puma.find_puma(processes)
        return view.master if view else None
    regex = re.compile(target.pattern)
    matches = [p for p in processes if p.pid != own_pid and regex.search(p.title)]
    return min(matches, key=lambda p: p.start_ticks) if matches else None


def busy_jobs(title: str) -> int | None:
    """Jobs in hand according to a Sidekiq-style title, or None when the title does not say. Pure."""
    match = BUSY_TITLE.search(title)
    return int(match.group(1)) if match else None


def describe(target: Target) -> str:
    if target.pidfile is not None:
        return f"the pid in {target.pidfile}"
    return f"a process titled /{target.pattern}/" if target.pattern else "the Puma master"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def locate(target: Target, read: Callable[[], list[puma.Process]]) -> puma.Process:
    found = find(target, read(), os.getpid())
    if found is None:
        raise puma.PumaError(f"no process found for {describe(target)}; is the pod's process namespace shared, "
                             "and is the pattern right?")
    return found


def _send(process: puma.Process, sig: signal.Signals) -> None:
    try:
        os.kill(process.pid, sig)
    except PermissionError as err:
        raise puma.PumaError(puma.signal_refused_message("the process", process.pid,
                                                         puma.process_uid(process.pid), os.geteuid())) from err
    except ProcessLookupError:
        pass


def drain(target: Target, quiet: str, drain_seconds: float, deadline_seconds: float,
          progress: Callable[[str], None], read: Callable[[], list[puma.Process]] = puma.read_processes) -> None:
    process = locate(target, read)
    _send(process, SIGNALS[quiet])
    progress(f"quieted pid {process.pid} with SIG{quiet}; draining up to {drain_seconds:.0f}s")
    until = time.monotonic() + drain_seconds
    while _alive(process.pid) and time.monotonic() < until:
        current = next((p for p in read() if p.pid == process.pid), None)
        if current is not None and busy_jobs(current.title) == 0:
            progress(f"pid {process.pid} is idle (its title says 0 busy)")
            break
        time.sleep(0.1)
    if _alive(process.pid):
        _send(process, signal.SIGTERM)
        progress(f"sent SIGTERM to pid {process.pid}")
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
        again = find(target, read(), os.getpid())
        if again is not None and again.pid != process.pid and not _alive(process.pid):
            progress(f"restarted as pid {again.pid}")
            return
    raise puma.PumaError(f"{describe(target)} did not come back within {deadline_seconds:.0f}s of its TERM; the "
                         "container must restart (restartPolicy Always, the default)")


def send_signal(target: Target, name: str, progress: Callable[[str], None],
                read: Callable[[], list[puma.Process]] = puma.read_processes) -> None:
    process = locate(target, read)
    _send(process, SIGNALS[name])
    time.sleep(1.0)
    if not _alive(process.pid) and find(target, read(), os.getpid()) is None:
        raise puma.PumaError(f"pid {process.pid} exited after SIG{name} and nothing took its place")
    progress(f"sent SIG{name} to pid {process.pid}")
