"""The chaos suite's invariants (testbed/chaos_checks.py), judged on hand-made observations."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from testbed import chaos_checks as checks


def pod(name: str, release: str = "v2", **changes: Any) -> checks.PodSeen:
    base = checks.PodSeen(name=name, uid=f"uid-{name}", restarts={"cfo-agent": 0, "puma": 0}, annotation=release,
                   agent_release=release, asked={}, signalled={}, current=f"releases/{release}", marker=True,
                   served=(release,) * 4, workers=2)
    return dataclasses.replace(base, **changes)


def trial(**changes: Any) -> checks.TrialSeen:
    before = {n: pod(n, "v1") for n in ("web-a", "web-b")}
    after = {n: pod(n, "v2", asked={"v2": 1}, signalled={"v2": 1}) for n in ("web-a", "web-b")}
    base = checks.TrialSeen(seed=7, fault="controller", variant="SIGKILL", releases=("v2",), started_at=100.0,
                     ended_at=160.0, before=before, after=after, replicasets_before=("web-1",),
                     replicasets_after=("web-1",), replicas=2, peak_pods=2,
                     rollout={"release": "v2", "previous": "v1", "phase": "Complete", "batch": []},
                     settle_seconds=20.0, bound_seconds=240, requests=3000, failures=())
    return dataclasses.replace(base, **changes)


def test_a_clean_trial_breaks_nothing() -> None:
    assert checks.trial_violations(trial()) == []


def test_a_trial_survives_its_json_round_trip() -> None:
    seen = trial(puma_kill=checks.PumaKill("web-a", 110.0, 113.0), failures=(110.5,), restarted=("web-a/puma",))
    assert checks.TrialSeen.from_json(seen.to_json()) == seen


def test_any_failed_request_without_a_killed_master_is_a_violation() -> None:
    counted, violations = checks.killed_master_failures(trial(failures=(112.0, 113.0)))
    assert counted == 0
    assert violations == ["2 of 3000 requests failed (the first sent 12.0s into the trial); no request may fail "
                          "unless a Puma master is killed"]


@pytest.mark.parametrize(("failures", "counted", "lost"), [
    ((109.5, 110.2, 114.9), 3, 0),  # in flight at the kill, routed before the endpoint left, within the lag
    ((108.0,), 0, 1),  # long before the kill
    ((110.5, 116.0), 1, 1),  # the endpoint had left 3s before
])
def test_failures_count_against_a_killed_master_only_until_its_endpoint_left(
        failures: tuple[float, ...], counted: int, lost: int) -> None:
    seen = trial(puma_kill=checks.PumaKill("web-a", 110.0, 113.0), failures=failures)
    ours, violations = checks.killed_master_failures(seen)
    assert (ours, len(violations)) == (counted, lost)
    if lost:
        assert "outside the killed master's window" in violations[0]
        assert "left the Service 3.0s after the kill" in violations[0]


def test_an_endpoint_that_never_left_is_a_violation() -> None:
    seen = trial(puma_kill=checks.PumaKill("web-a", 110.0, None), failures=(111.0,))
    _, violations = checks.killed_master_failures(seen)
    assert violations == ["the endpoint of web-a never left the Service after its Puma master was killed"]


@pytest.mark.parametrize(("changes", "message"), [
    ({"settle_seconds": None, "rollout": {"release": "v2", "previous": "v1", "phase": "Progressing",
                                          "batch": ["web-a"], "message": "batch 1"}},
     "the rollout of v2 did not end Complete, Failed or RolledBack within 240s: last Progressing of v2, "
     "batch ['web-a']: batch 1"),
    ({"releases": ("v2", "v3")}, "the rollout record names v2, but the last release asked for is v3"),
    ({"rollout": {}}, "no rollout record on the Deployment after the trial (wanted v2)"),
])
def test_a_rollout_must_end_on_the_last_release_asked_within_the_bound(changes: dict[str, Any],
                                                                       message: str) -> None:
    assert checks.rollout_violations(trial(**changes)) == [message]


def test_a_rolled_back_rollout_wants_every_pod_on_the_previous_release() -> None:
    rolled_back = {"release": "v2", "previous": "v1", "phase": "RolledBack", "batch": []}
    after = {"web-a": pod("web-a", "v1"), "web-b": pod("web-b", "v2")}
    violations = checks.serving_violations(trial(rollout=rolled_back, after=after))
    assert violations == [
        "current on web-b's volume is releases/v2, the rollout record says v1",
        "web-b answers with ['v2'], the rollout record says v1",
        "web-b: its agent reports v2 and the pod is marked v2, the rollout record says v1",
    ]


@pytest.mark.parametrize(("changes", "message"), [
    ({"marker": False}, "current on web-a's volume points at releases/v2, which is not a whole release "
                        "(its .cfo-release.json is missing)"),
    ({"served": ("v2", "v1")}, "web-a answers with ['v1', 'v2'], the rollout record says v2"),
    ({"workers": 3}, "Puma in web-a runs 3 workers, not 2"),
    ({"annotation": "v0"}, "web-a: its agent reports v2 and the pod is marked v0, the rollout record says v2"),
])
def test_each_pod_serves_what_the_record_says_from_a_whole_release(changes: dict[str, Any], message: str) -> None:
    seen = trial()
    after = {**seen.after, "web-a": dataclasses.replace(seen.after["web-a"], **changes)}
    assert checks.serving_violations(dataclasses.replace(seen, after=after)) == [message]


def test_after_a_plain_failure_each_pod_must_be_on_one_of_the_two_releases() -> None:
    failed = {"release": "v2", "previous": "v1", "phase": "Failed", "batch": []}
    after = {"web-a": pod("web-a", "v1"), "web-b": pod("web-b", "v2"), "web-c": pod("web-c", "v0")}
    assert checks.serving_violations(trial(rollout=failed, after=after)) == [
        "web-c is marked v0, neither v2 nor v1 after a Failed rollout"]


def test_asking_or_signalling_twice_for_one_release_is_a_violation() -> None:
    seen = trial()
    before = {**seen.before, "web-a": pod("web-a", "v1", asked={"v2": 1}, signalled={"v0": 1})}
    after = {**seen.after, "web-a": pod("web-a", "v2", asked={"v2": 3}, signalled={"v2": 2, "v0": 1})}
    assert checks.once_violations(dataclasses.replace(seen, before=before, after=after)) == [
        "the agent of web-a was asked 2 times to move to v2", "web-a was signalled 2 times for release v2"]


def test_a_restarted_agent_counts_from_zero() -> None:
    seen = trial()
    before = {**seen.before, "web-a": pod("web-a", "v1", asked={"v2": 5})}
    after = {**seen.after, "web-a": pod("web-a", "v2", asked={"v2": 1}, restarts={"cfo-agent": 1, "puma": 0})}
    assert checks.once_violations(dataclasses.replace(seen, before=before, after=after)) == []


def test_pods_kept_and_only_the_killed_container_restarted_once() -> None:
    seen = trial(restarted=("web-a/puma",))
    after = {**seen.after, "web-a": dataclasses.replace(seen.after["web-a"], restarts={"cfo-agent": 0, "puma": 1})}
    assert checks.pod_violations(dataclasses.replace(seen, after=after)) == []
    assert checks.pod_violations(seen) == ["web-a/puma was killed but its restartCount did not go up"]
    replaced = {**seen.after, "web-b": dataclasses.replace(seen.after["web-b"], uid="uid-new",
                                                           restarts={"cfo-agent": 0, "puma": 2})}
    assert checks.pod_violations(trial(after=replaced, peak_pods=3, replicasets_after=("web-1", "web-2"))) == [
        "pods replaced: gone ['web-b'], new ['web-b']",
        "3 pods existed at once, for 2 replicas",
        "ReplicaSets changed from ['web-1'] to ['web-1', 'web-2']",
        "web-b/puma restarted 2 times (0 expected from the fault)",
    ]


METRICS = """# HELP process_resident_memory_bytes Resident memory size in bytes.
process_resident_memory_bytes {rss}
process_start_time_seconds 1000.5
cfo_controller_api_requests_total {api}
cfo_controller_rollouts_total{{outcome="Complete"}} 3.0
"""


def test_controller_samples_are_read_from_its_metrics() -> None:
    sample = checks.controller_sample(5.0, "ctl-a", METRICS.format(rss=5e7, api=120))
    assert sample is not None and (sample.started, sample.rss_bytes, sample.api_requests) == (1000.5, 5e7, 120)
    assert checks.controller_sample(5.0, "ctl-a", "nothing 1\n") is None


def test_the_controller_must_stay_bounded_in_memory_and_api_rate() -> None:
    limits = checks.ControllerLimits(rss_bytes=100 * 2**20, rss_growth_bytes=10 * 2**20, api_requests_per_second=5)
    calm = [checks.controller_sample(t, "ctl-a", METRICS.format(rss=50 * 2**20, api=t * 2)) for t in (0.0, 30.0, 60.0)]
    assert checks.controller_violations([s for s in calm if s], limits) == []
    leaking = [checks.controller_sample(t, "ctl-a", METRICS.format(rss=(50 + t) * 2**20, api=t * 10))
               for t in (0.0, 30.0, 60.0)]
    assert checks.controller_violations([s for s in leaking if s], limits) == [
        "controller ctl-a used 110 MiB, over 100 MiB",
        "controller ctl-a grew 60 MiB over 3 trials (more than 10 MiB)",
        "controller ctl-a made 10.0 API requests/s over 30s (more than 5/s)",
        "controller ctl-a made 10.0 API requests/s over 30s (more than 5/s)",
    ]
    summary = checks.controller_summary([s for s in leaking if s])
    assert summary == {"processes": 1, "peak_rss_mib": 110.0, "peak_api_requests_per_second": 10.0}


def test_a_seed_names_its_fault_and_a_replay_command() -> None:
    assert [checks.fault_of(s) for s in range(len(checks.FAULTS))] == list(checks.FAULTS)
    assert checks.replay_command(trial(seed=42, fault="puma")) == "make chaos SEED=42 TRIALS=1 FAULT=puma"


def test_the_table_counts_outcomes_and_failed_requests_per_fault() -> None:
    killed = trial(fault="puma", puma_kill=checks.PumaKill("web-a", 110.0, 113.0), failures=(110.5,),
                   rollout={"release": "v2", "previous": "v1", "phase": "RolledBack", "batch": []})
    rows = checks.table([(trial(), []), (killed, []), (trial(failures=(120.0,)), ["lost"])])
    by_fault = {row["fault"]: row for row in rows}
    assert [row["fault"] for row in rows] == ["controller", "puma", "all"]
    assert by_fault["controller"] | {} == {"fault": "controller", "trials": 2, "completed": 2, "rolled_back": 0,
                                           "failed": 0, "requests": 6000, "failed_requests": 1,
                                           "of_killed_puma_master": 0, "violations": 1,
                                           "median_settle_seconds": 20.0}
    assert (by_fault["puma"]["rolled_back"], by_fault["puma"]["of_killed_puma_master"]) == (1, 1)
    assert by_fault["all"]["trials"] == 3
    text = checks.format_table(rows)
    assert text.splitlines()[0].startswith("| fault | trials | Complete | RolledBack |")
    assert "| all | 3 | 2 | 1 | 0 | 9000 | 2 | 1 | 1 | 20.0 |" in text
