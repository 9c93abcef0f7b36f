"""The rollout record: the `customer-friendly.dev/rollout` annotation the controller writes on a
Deployment, and its phases. The controller plans from it and `kubectl cfo` shows and waits on it,
so both read it through this one type. Pure.

Python names inside, wire names at the edge: the fields are snake_case, the annotation's JSON
keys camelCase (`batchNumber`), as clusters already hold them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

PROGRESSING, PAUSED, COMPLETE, FAILED, ROLLED_BACK = "Progressing", "Paused", "Complete", "Failed", "RolledBack"
PHASES = (PROGRESSING, PAUSED, COMPLETE, FAILED, ROLLED_BACK)
FINAL_PHASES = (COMPLETE, FAILED, ROLLED_BACK)
"""A rollout in one of these ends once its last batch is collected (no batch in flight)."""
ABANDONED_PHASES = (FAILED, ROLLED_BACK)


def _wire(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


@dataclass(frozen=True)
class Rollout:
    """Where a Deployment's rollout stands; everything needed to resume it after a crash."""

    release: str
    previous: str | None
    phase: str
    updated: int = 0
    total: int = 0
    message: str = ""
    batch: tuple[str, ...] = ()
    """Pods asked in the batch in flight; recorded before any of them is asked."""
    batch_release: str | None = None
    batch_started_at: float | None = None
    batch_number: int = 0
    rolling_back: bool = False
    migrated: bool = False
    failed_pod: str | None = None
    reason: str | None = None
    retry: str | None = None
    started_at: float | None = None

    @property
    def settled(self) -> bool:
        """Ended: a final phase with no batch left in flight (a rollback may still be running)."""
        return self.phase in FINAL_PHASES and not self.batch and not self.rolling_back

    @property
    def succeeded(self) -> bool:
        return self.settled and self.phase == COMPLETE

    @property
    def wanted(self) -> str:
        """The release the pods are being moved to: the previous one while rolling back."""
        return self.previous if self.rolling_back and self.previous else self.release

    def to_wire(self) -> dict[str, Any]:
        """The annotation's JSON object (camelCase keys)."""
        return {_wire(f.name): list(self.batch) if f.name == "batch" else getattr(self, f.name)
                for f in fields(self)}

    def to_annotation(self) -> str:
        return json.dumps(self.to_wire(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_wire(cls, data: object) -> Rollout | None:
        """None for anything that is not a rollout record; unknown keys are ignored (newer writers)."""
        if not isinstance(data, dict) or not isinstance(data.get("release"), str) or data.get("phase") not in PHASES:
            return None
        known = {f.name: data[_wire(f.name)] for f in fields(cls) if _wire(f.name) in data}
        known["batch"] = tuple(known.get("batch") or ())
        try:
            return cls(**known)
        except TypeError:
            return None

    @classmethod
    def from_annotation(cls, text: str | None) -> Rollout | None:
        try:
            return cls.from_wire(json.loads(text)) if text else None
        except (json.JSONDecodeError, RecursionError):
            return None
