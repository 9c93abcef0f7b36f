"""Which rollouts become gauge series (controller/progress.py), and how the collector writes them
(controller/metrics.py): table-driven, from rollout records as the controller writes them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from customer_friendly import contract as c
from customer_friendly.contract.rollout import Rollout
from customer_friendly.controller.metrics import FAILED, STARTED, RolloutGauges
from customer_friendly.controller.progress import RolloutSeries, rollout_series


def deployment(name: str, rollout: Rollout | None, namespace: str = "shop", enabled: str = "true") -> dict:
    notes = {c.ENABLED: enabled}
    if rollout is not None:
        notes[c.ROLLOUT] = rollout.to_annotation()
    return {"metadata": {"name": name, "namespace": namespace, "annotations": notes}}


START = 1_700_000_000.0


def record(phase: str, **fields) -> Rollout:
    return Rollout(release="v42", previous="v41", phase=phase, started_at=START, **fields)


@pytest.mark.parametrize(("rollout", "expected"), [
    (record("Progressing", batch=("web-1",)), RolloutSeries("shop", "web", "Progressing", START, True, False)),
    (record("Progressing"), RolloutSeries("shop", "web", "Progressing", START, True, False)),
    (record("Paused"), RolloutSeries("shop", "web", "Paused", START, True, False)),
    # Failed with the rollback still running is in progress, not failed yet.
    (record("Failed", rolling_back=True), RolloutSeries("shop", "web", "Failed", START, True, False)),
    (record("Failed"), RolloutSeries("shop", "web", "Failed", START, False, True)),
    (record("RolledBack"), RolloutSeries("shop", "web", "RolledBack", START, False, True)),
    # A final phase with a batch still in flight has not ended.
    (record("Complete", batch=("web-1",)), RolloutSeries("shop", "web", "Complete", START, True, False)),
    (record("Complete"), None),
    (None, None),
])
def test_a_rollout_is_a_series_while_in_progress_or_once_failed(rollout: Rollout | None,
                                                                 expected: RolloutSeries | None) -> None:
    assert rollout_series([deployment("web", rollout)]) == ([expected] if expected else [])


@pytest.mark.parametrize("enabled", ["false", "yes"])
def test_a_deployment_not_opted_in_gives_no_series_whatever_its_record_says(enabled: str) -> None:
    assert rollout_series([deployment("web", record("Progressing"), enabled=enabled)]) == []


def test_a_record_that_is_not_json_gives_no_series() -> None:
    broken = {"metadata": {"name": "web", "namespace": "shop",
                           "annotations": {c.ENABLED: "true", c.ROLLOUT: "{not json"}}}
    assert rollout_series([broken]) == []


def test_series_are_sorted_by_namespace_then_name() -> None:
    found = rollout_series([deployment("b", record("Paused"), "z"), deployment("a", record("Paused"), "z"),
                            deployment("c", record("Paused"), "a")])
    assert [(s.namespace, s.deployment) for s in found] == [("a", "c"), ("z", "a"), ("z", "b")]


def scrape(deployments: list[dict]) -> str:
    registry = CollectorRegistry()
    registry.register(RolloutGauges(lambda: deployments))
    return generate_latest(registry).decode()


def test_the_collector_writes_the_start_of_rollouts_in_progress_and_a_one_for_failed_ones() -> None:
    text = scrape([deployment("web", record("Progressing", batch=("web-1",))),
                   deployment("worker", record("RolledBack")), deployment("cron", record("Complete"))])
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples == [
        f'{STARTED}{{deployment="web",namespace="shop",phase="Progressing"}} 1.7e+09',
        f'{FAILED}{{deployment="worker",namespace="shop",phase="RolledBack"}} 1.0',
    ]


def test_a_rollout_that_ends_leaves_no_series_behind() -> None:
    deployments = [deployment("web", record("Progressing"))]
    assert f'{STARTED}{{' in scrape(deployments)
    deployments[0] = deployment("web", record("Complete"))
    text = scrape(deployments)
    assert f"# TYPE {STARTED} gauge" in text  # the family is still declared, for the rules
    assert f"{STARTED}{{" not in text


def test_a_record_without_a_start_time_is_not_reported_as_started() -> None:
    old = Rollout(release="v42", previous="v41", phase="Progressing")
    assert f"{STARTED}{{" not in scrape([deployment("web", old)])
