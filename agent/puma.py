"""Find the Puma master through the shared PID namespace, signal it, and watch the restart.

Parsing (/proc stat lines, process titles, Puma's /stats JSON) is pure and unit-tested; the
thin functions at the bottom read /proc and send signals.

Facts this relies on (Puma 5.6 to 7): the master's title is `puma X.Y.Z (tcp://…) [tag]`,
a worker's is `puma: cluster worker N: <master pid> [tag]`. SIGUSR1 is a phased restart
(workers replaced one at a time; impossible in single mode or with preload_app!, where Puma
silently does a full restart instead), SIGUSR2 a hot restart (the master re-execs itself
with the same pid, keeping its listeners).
"""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

MASTER_TITLE = re.compile(r"^puma \d+\.\d+\.\d+ \(")
WORKER_TITLE = re.compile(r"^puma: cluster worker (\d+): (\d+)")
SIGNALS = {"phased": signal.SIGUSR1, "hot": signal.SIGUSR2}
SURGE_UP, SURGE_DOWN = signal.SIGTTIN, signal.SIGTTOU
"""One worker more, one worker fewer: Puma changes its worker count and spawns or culls (the
youngest first) at once, even during a phased restart."""


class PumaError(RuntimeError):
    """Puma cannot be found or signalled, or a restart failed."""


class CannotBoot(PumaError):
    """A restart's new workers keep exiting before they boot: the release cannot boot."""


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    start_ticks: int
    """Start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    title: str


@dataclass(frozen=True)
class PumaView:
    """Puma as seen from the process table."""

    master: Process
    workers: tuple[Process, ...] = field(default=())

    @property
    def mode(self) -> str:
        return "cluster" if self.workers else "single"

    def as_dict(self) -> dict[str, object]:
        return {"masterPid": self.master.pid, "mode": self.mode, "workers": len(self.workers),
                "title": self.master.title}


def parse_stat(text: str) -> tuple[int, int]:
    """(ppid, start_ticks) from a /proc/<pid>/stat line; the command may hold spaces and ')'."""
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); ppid is field 4, starttime field 22.
    return int(rest[1]), int(rest[19])


def stat_state(text: str) -> str:
    """The state letter of a /proc/<pid>/stat line: R, S, D, T, Z (zombie), X (dead)..."""
    return text[text.rindex(")") + 2:].split(maxsplit=1)[0]


def parse_cmdline(raw: bytes) -> str:
    return raw.replace(b"\0", b" ").decode("utf-8", errors="replace").strip()


def find_puma(processes: Iterable[Process], master_pid: int | None = None) -> PumaView | None:
    """The master (given, or found by its title) and its workers (its children with a worker title)."""
    table = list(processes)
    if master_pid is not None:
        master = next((p for p in table if p.pid == master_pid), None)
    else:
        masters = [p for p in table if MASTER_TITLE.match(p.title)]
        master = min(masters, key=lambda p: p.start_ticks) if masters else None
    if master is None:
        return None
    indexed = [(int(match.group(1)), p) for p in table
               if p.ppid == master.pid and (match := WORKER_TITLE.match(p.title))]
    return PumaView(master, tuple(p for _, p in sorted(indexed, key=lambda pair: pair[0])))


def restarted_since(view: PumaView | None, signal_ticks: int, expected_workers: int) -> bool:
    """Every worker slot is a new process started after the signal (phased and hot alike).

    A hot restart re-execs the master under the same pid, so the same test holds: all the
    workers must be new children of that pid.
    """
    if view is None or expected_workers < 1 or len(view.workers) != expected_workers:
        return False
    return all(w.start_ticks >= signal_ticks for w in view.workers)


def workers_up(view: PumaView | None, signal_ticks: int, expected: int, stats: Stats | None) -> bool:
    """Every worker slot is a new process, and, when the control app's stats are given, every one
    has booted. Without stats a crash-looping worker of a hot restart looks new too: the caller
    then also waits for the workers to stay the same processes for a while. Pure."""
    if not restarted_since(view, signal_ticks, expected):
        return False
    return stats is None or (stats.workers == expected and stats.booted_workers == expected)


@dataclass
class BootWatch:
    """Counts the failed boots of a restart: its new workers that exited before it was done. Pure.

    Fed every view of Puma taken while a phased or hot restart is watched. A worker is new when
    it started at or after `since` (the signal). Old workers leave on purpose in both kinds of
    restart and never count; a hot restart re-execs the master under the same pid, so its new
    workers are children of that pid like a phased restart's. A worker that exits after the view
    `observe` was told is done does not count: the restart did not fail. (A pid reused within
    seconds is impossible; ignored.)

    Level-based: a vanished worker is one seen new in an earlier view and absent from this one
    (exited, or a zombie awaiting its reaping, which read_processes leaves out). Puma respawns a
    worker that cannot boot in a few milliseconds or a few seconds; each one seen counts.
    """

    since: int
    alive: frozenset[int] = frozenset()
    """The new workers of the last view."""
    exited: tuple[int, ...] = ()
    """New workers that vanished before the restart was done, in the order seen."""
    finished: bool = False

    @property
    def failures(self) -> int:
        return len(self.exited)

    def observe(self, view: PumaView | None, done: bool = False) -> int:
        """Take one view; `done` when the restart is done in this view. Returns the failures so far.

        No view (the master is gone) tells nothing about the workers: the caller fails on it.
        """
        if self.finished or view is None:
            return self.failures
        new = frozenset(w.pid for w in view.workers if w.start_ticks >= self.since)
        self.exited += tuple(sorted(self.alive - new))
        self.alive = new
        self.finished = done
        return self.failures


def cannot_boot_message(release: str | None, failures: int, mode: str, tail: str | None) -> str:
    """One line for a restart stopped by its crash-looping workers. Pure."""
    what = f"release {release}" if release else "the release"
    serving = ("the old workers keep serving" if mode == "phased"
               else "no worker serves until Puma is restarted on a release that boots")
    return (f"{what} cannot boot: {failures} new workers exited during the {mode} restart; {serving}"
            + (f"; Puma said: {tail}" if tail else ""))


def preload_in_config(text: str) -> bool:
    """True when a Puma config turns preload on (which makes phased restarts impossible)."""
    for line in text.splitlines():
        code = line.split("#", 1)[0].strip()
        match = re.match(r"^preload_app!\s*\(?\s*(true|false)?\s*\)?$", code)
        if match:
            return match.group(1) != "false"
    return False


def shrunk(view: PumaView | None, stats: Stats | None, expected: int) -> bool:
    """After a surge: back to `expected` workers (and, with stats, every one booted). Pure."""
    if view is None or len(view.workers) != expected:
        return False
    return stats is None or (stats.workers == expected and stats.booted_workers == expected)


@dataclass(frozen=True)
class Stats:
    """The parts of Puma's control-app /stats that tell a restart's progress."""

    phase: int
    workers: int
    booted_workers: int
    old_workers: int

    @classmethod
    def parse(cls, text: str) -> Stats | None:
        """None for single mode, whose /stats has no `workers`."""
        data = json.loads(text)
        if "worker_status" not in data:
            return None
        statuses = data["worker_status"]
        return cls(
            phase=int(data.get("phase", 0)),
            workers=int(data.get("workers", len(statuses))),
            booted_workers=int(data.get("booted_workers", sum(1 for w in statuses if w.get("booted")))),
            old_workers=int(data.get("old_workers", 0)),
        )

    def phased_restart_done(self, phase_before: int) -> bool:
        return self.phase > phase_before and self.old_workers == 0 and self.booted_workers == self.workers


def parse_status_uids(text: str) -> tuple[int, int, int] | None:
    """(real, effective, saved) uid from a /proc/<pid>/status text, or None."""
    for line in text.splitlines():
        if line.startswith("Uid:"):
            fields = line.split()[1:4]
            if len(fields) == 3 and all(f.isdigit() for f in fields):
                return int(fields[0]), int(fields[1]), int(fields[2])
    return None


def signal_refused_message(what: str, pid: int, target_uid: int | None, agent_uid: int) -> str:
    """Why the kernel will not let the agent signal `pid`, and what fixes it. Pure."""
    runs_as = f"runs as uid {target_uid}" if target_uid is not None else "runs as another user"
    fix = f"run the agent as uid {target_uid}" if target_uid is not None else "run the agent as the app's user"
    return (f"not allowed to signal {what} (pid {pid}): it {runs_as}, the agent as uid {agent_uid} without an "
            f"effective CAP_KILL; {fix} (a capability added to a non-root container is not effective)")


# --- I/O ----------------------------------------------------------------------------------

def read_processes(proc: Path = Path("/proc")) -> list[Process]:
    processes = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat_state(stat) in ("Z", "X"):
                continue  # exited, not yet reaped by its parent: it will never take a signal again
            ppid, start = parse_stat(stat)
            title = parse_cmdline((entry / "cmdline").read_bytes())
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked, or not ours to read
        processes.append(Process(int(entry.name), ppid, start, title))
    return processes


def boot_ticks_now(proc: Path = Path("/proc")) -> int:
    """The current time in the clock ticks that /proc/<pid>/stat start times use."""
    uptime = float((proc / "uptime").read_text().split()[0])
    return int(uptime * os.sysconf("SC_CLK_TCK"))


def locate(pidfile: Path | None = None, proc: Path = Path("/proc")) -> PumaView:
    master_pid = None
    if pidfile is not None:
        try:
            master_pid = int(pidfile.read_text().strip())
        except (OSError, ValueError) as err:
            raise PumaError(f"cannot read Puma's pidfile {pidfile}: {err}") from err
    view = find_puma(read_processes(proc), master_pid)
    if view is None:
        where = f"pid {master_pid} from {pidfile}" if pidfile else "a process titled 'puma X.Y.Z (...)'"
        raise PumaError(f"Puma master not found ({where}); is the pod's process namespace shared?")
    return view


def process_uid(pid: int, proc: Path = Path("/proc")) -> int | None:
    """The real uid of a process (the one the kernel's kill permission check compares)."""
    try:
        uids = parse_status_uids((proc / str(pid) / "status").read_text())
    except OSError:
        return None
    return uids[0] if uids else None


def check_can_signal(pid: int, what: str = "Puma") -> None:
    """Ask the kernel, with signal 0, whether a signal to `pid` would be allowed: checked before
    `current` moves, so that a release the agent cannot complete changes nothing."""
    try:
        os.kill(pid, 0)
    except PermissionError as err:
        raise PumaError(signal_refused_message(what, pid, process_uid(pid), os.geteuid())) from err
    except ProcessLookupError as err:
        raise PumaError(f"{what} (pid {pid}) exited") from err


def send(view: PumaView, mode: str) -> None:
    signal_master(view, SIGNALS[mode])


def signal_master(view: PumaView, signum: int) -> None:
    try:
        os.kill(view.master.pid, signum)
    except PermissionError as err:
        raise PumaError(signal_refused_message("Puma", view.master.pid, process_uid(view.master.pid),
                                               os.geteuid())) from err
    except ProcessLookupError as err:
        raise PumaError(f"Puma (pid {view.master.pid}) exited before it could be signalled") from err


def fetch_stats(control_url: str, token: str | None) -> Stats | None:
    url = control_url.rstrip("/") + "/stats" + (f"?token={token}" if token else "")
    with urllib.request.urlopen(url, timeout=5) as response:
        return Stats.parse(response.read().decode())


def summarize_log(text: str, lines: int = 5) -> str:
    """The last distinct lines of Puma's output, without pid prefixes: a crash-looping worker
    repeats the same few lines for every attempt."""
    distinct: list[str] = []
    for line in text.splitlines():
        line = re.sub(r"^\[\d+\] ", "", line).strip()
        if line and line not in distinct:
            distinct.append(line)
        elif line in distinct:
            distinct.remove(line)
            distinct.append(line)
    return " | ".join(distinct[-lines:])


def boot_error_tail(view: PumaView, lines: int = 5, proc: Path = Path("/proc")) -> str | None:
    """The end of Puma's stderr when it goes to a file we can read (it often does not)."""
    try:
        target = Path(os.readlink(proc / str(view.master.pid) / "fd" / "2"))
        if not target.is_file():
            return None
        with target.open("rb") as fh:
            start = max(0, target.stat().st_size - 8192)
            fh.seek(start)
            text = fh.read().decode(errors="replace")
            if start:
                text = text.split("\n", 1)[-1]  # the first line read is only the end of one
            return summarize_log(text, lines) or None
    except OSError:
        return None
