"""The chaos suite's short profile (issue 16): 24 seeded trials, three of each fault kind, on the
real node under a constant POST load through the Service's ClusterIP. `make chaos` runs the long
profile (200 trials) on a node of its own; testbed/chaos.py has the faults and the runner,
testbed/chaos_checks.py the invariants."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from testbed.chaos import run_trials
from testbed.chaos_checks import FAULTS, format_table
from testbed.node_app import WebApp

pytestmark = [pytest.mark.node, pytest.mark.chaos]

SEED = 1600
TRIALS = 3 * len(FAULTS)


def test_faults_at_seeded_moments_of_releases_under_load_break_no_invariant(app: WebApp, tmp_path: Path) -> None:
    started = time.monotonic()
    run = run_trials(app, range(SEED, SEED + TRIALS), log=lambda line: print(line, flush=True))
    report = run.report(SEED, TRIALS, None)
    (tmp_path / "chaos.json").write_text(json.dumps(report, indent=1))
    print(f"\nchaos, short profile: {TRIALS} trials in {time.monotonic() - started:.0f}s; controller: "
          f"{report['controller']}\n{format_table(report['table'])}\nreport: {tmp_path / 'chaos.json'}")
    assert {seen.fault for seen, _ in run.results} == set(FAULTS)
    violations = report["violations"]
    assert not violations, f"{len(violations)} invariants broken:\n" + "\n".join(violations)
