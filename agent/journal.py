"""The restart in flight, written on the code volume so that a restarted agent can finish it.

A killed agent container (OOM, a node hiccup, a kubelet restart of the sidecar) comes back with an
empty memory while Puma carries on with the restart it was sent: a phased restart runs on by
itself, but the surge worker (TTIN) is only given back (TTOU) by the agent that watched it. The
chaos suite found a pod left on 3 workers for good that way, its rollout reported Complete. So the
agent writes this record just after it signals, removes it when the operation ends, and at its
start a record whose Puma master still runs (same pid and start time) means: watch that restart
to its end, give the surge worker back, and only then say done.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

NAME = ".cfo-restart.json"


@dataclass(frozen=True)
class Restart:
    release: str
    mode: str
    master_pid: int
    master_ticks: int
    """The master's start time: with the pid, it names one process for good."""
    signal_ticks: int
    """When the signal was sent (boot ticks): the restart's new workers started after it."""
    expected: int
    """Workers when the restart is done, the surge worker not counted."""
    surge: bool
    deadline_at: float
    """Wall-clock time after which the restart counts as failed."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Restart | None:
        """None for anything that is not a whole record (a torn write is treated as none)."""
        try:
            body = json.loads(text)
            return cls(**body) if isinstance(body, dict) else None
        except (ValueError, TypeError):
            return None


def write(root: Path, restart: Restart) -> None:
    """Atomically (a rename), so a reader never sees half a record."""
    path = root / NAME
    partial = root / f".{NAME}.partial"
    partial.write_text(restart.to_json())
    os.replace(partial, path)


def read(root: Path) -> Restart | None:
    try:
        return Restart.from_json((root / NAME).read_text())
    except OSError:
        return None


def remove(root: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (root / NAME).unlink()
