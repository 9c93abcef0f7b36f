"""The rollout gauges, collected at each scrape from the cached Deployments (`progress.py` says
which series exist). The counters and the histogram are kept where their events happen
(reconcile.py, kube.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from customer_friendly.contract.objects import Obj
from customer_friendly.controller.progress import rollout_series

STARTED = "cfo_controller_rollout_started_timestamp_seconds"
FAILED = "cfo_controller_rollout_failed"
LABELS = ["namespace", "deployment", "phase"]


class RolloutGauges(Collector):
    """`deployments` returns the Deployments as the cache holds them now."""

    def __init__(self, deployments: Callable[[], Iterable[Obj]]) -> None:
        self.deployments = deployments

    def collect(self) -> Iterator[Metric]:
        started = GaugeMetricFamily(STARTED, "Start (Unix time) of each Deployment's rollout in progress; "
                                             "the series ends with the rollout", labels=LABELS)
        failed = GaugeMetricFamily(FAILED, "1 for each Deployment whose last rollout failed (Failed or "
                                           "RolledBack), until its next release", labels=LABELS)
        for series in rollout_series(self.deployments()):
            labels = [series.namespace, series.deployment, series.phase]
            if series.in_progress and series.started_at is not None:
                started.add_metric(labels, series.started_at)
            if series.failed:
                failed.add_metric(labels, 1.0)
        yield started
        yield failed
