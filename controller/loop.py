"""Keep reconcile fed: a delaying work queue fed by the caches' watches, and a leader Lease.

What wakes a Deployment is controller/cache.py's (list+watch of Deployments, their pods and
release ConfigMaps; 410 Gone lists again). Only the Lease holder reconciles, so two replicas
never roll the same Deployment; every replica keeps its caches warm.
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import math
import threading
import time
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

logger = logging.getLogger(__name__)

Key = tuple[str, str]


class WorkQueue:
    """Keys due at a time; a key is never handed to two workers at once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[Key, float] = {}
        self._heap: list[tuple[float, Key]] = []
        self._active: set[Key] = set()
        self._again: dict[Key, float] = {}

    def add(self, key: Key, delay: float = 0.0) -> None:
        when = time.monotonic() + delay
        with self._cond:
            if key in self._active:
                self._again[key] = min(when, self._again.get(key, when))
                return
            if key in self._due and self._due[key] <= when:
                return
            self._due[key] = when
            heapq.heappush(self._heap, (when, key))
            self._cond.notify()

    def get(self, stop: threading.Event) -> Key | None:
        with self._cond:
            while not stop.is_set():
                while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded entry
                if self._heap and self._heap[0][0] <= time.monotonic():
                    _, key = heapq.heappop(self._heap)
                    del self._due[key]
                    self._active.add(key)
                    return key
                timeout = (self._heap[0][0] - time.monotonic()) if self._heap else 1.0
                self._cond.wait(max(0.01, min(timeout, 1.0)))
        return None

    def done(self, key: Key) -> None:
        with self._cond:
            self._active.discard(key)
            again = self._again.pop(key, None)
        if again is not None:
            self.add(key, max(0.0, again - time.monotonic()))


class Lease:
    """Leader election on a coordination.k8s.io Lease, with optimistic concurrency."""

    def __init__(self, api: client.CoordinationV1Api, namespace: str, name: str, identity: str,
                 duration: int = 15) -> None:
        self.api, self.namespace, self.name, self.identity, self.duration = api, namespace, name, identity, duration
        self.timeout = max(1.0, duration / 3)
        """Each Lease call gives up after this: a call hanging on an API server that went away must
        not keep the renewing thread (and so the leader's belief that it leads) stuck."""

    def try_acquire(self) -> bool:
        now = dt.datetime.now(dt.UTC)
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self.timeout)
        except ApiException as err:
            if err.status != 404:
                raise
            body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                                  spec=client.V1LeaseSpec(holder_identity=self.identity, acquire_time=now,
                                                          renew_time=now, lease_duration_seconds=self.duration))
            try:
                self.api.create_namespaced_lease(self.namespace, body, _request_timeout=self.timeout)
                return True
            except ApiException as create_err:
                if create_err.status == 409:
                    return False
                raise
        spec = lease.spec
        held_by_other = spec.holder_identity not in (None, self.identity)
        expired = spec.renew_time is None or (
            now - spec.renew_time).total_seconds() > (spec.lease_duration_seconds or self.duration)
        if held_by_other and not expired:
            return False
        if spec.holder_identity != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity, spec.renew_time, spec.lease_duration_seconds = self.identity, now, self.duration
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=self.timeout)
        except ApiException as err:
            if err.status == 409:  # someone else renewed first
                return False
            raise
        return True


    def release(self) -> None:
        """Give the Lease up on a clean stop, so that another replica need not wait for it to expire."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as err:
            logger.warning("could not release the lease: %s", err.reason)


Sources = Callable[[Callable[[Key], None], threading.Event], None]
"""Starts what wakes Deployments (ClusterCache.run): it calls the enqueue it is given, until the event is set."""


class Controller:
    def __init__(self, reconcile: Callable[[str, str], float | None], sources: Sources, lease: Lease | None,
                 workers: int = 16, resync_seconds: float = 30.0) -> None:
        self.reconcile, self.sources, self.lease = reconcile, sources, lease
        self.workers, self.resync_seconds = workers, resync_seconds
        self.queue = WorkQueue()
        self.stop = threading.Event()
        self.leading = threading.Event()
        self.renewed = -math.inf
        """When the last successful renewal was started (time.monotonic())."""
        self.renew_deadline = (lease.duration * 2 / 3) if lease else math.inf
        """A leader that has not renewed for this long stops reconciling, before its Lease (duration)
        can expire and another replica take it (client-go's RenewDeadline, 10 s of 15)."""
        self.known: set[Key] = set()
        self._failures: dict[Key, int] = {}

    def _enqueue(self, key: Key) -> None:
        self.known.add(key)
        self.queue.add(key)

    def leads(self) -> bool:
        """Whether this replica may reconcile now: it holds the Lease, renewed within the deadline."""
        return self.leading.is_set() and time.monotonic() - self.renewed < self.renew_deadline

    def _work(self) -> None:
        while not self.stop.is_set():
            if not self.leads():
                self.stop.wait(0.2)
                continue
            key = self.queue.get(self.stop)
            if key is None:
                continue
            if not self.leads():  # the Lease was lost while this worker waited for work: not ours now
                self.queue.done(key)
                self.queue.add(key)
                continue
            try:
                again = self.reconcile(*key)
                self._failures.pop(key, None)
            except Exception:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                again = min(30.0, 0.5 * 2 ** failures)
                logger.exception("reconcile %s/%s failed; retrying in %.1fs", *key, again)
            finally:
                self.queue.done(key)
            if again is not None:
                self.queue.add(key, again)

    def _lead(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                leading = self.lease is None or self.lease.try_acquire()
            except Exception as err:
                logger.warning("lease renewal failed: %s", err)
                leading = False
            if leading:
                self.renewed = started
            if leading and not self.leading.is_set():
                logger.info("became the leader; reconciling")
                for key in list(self.known):
                    self.queue.add(key)
            elif not leading and self.leading.is_set():
                logger.warning("lost the lease; pausing")
            (self.leading.set if leading else self.leading.clear)()
            self.stop.wait((self.lease.duration / 3) if self.lease else 5)

    def _resync(self) -> None:
        while not self.stop.wait(self.resync_seconds):
            for key in list(self.known):
                self.queue.add(key)

    def run(self) -> None:
        threads = [threading.Thread(target=self._lead, name="lease", daemon=True),
                   threading.Thread(target=self.sources, args=(self._enqueue, self.stop), name="sources", daemon=True),
                   threading.Thread(target=self._resync, name="resync", daemon=True)]
        threads += [threading.Thread(target=self._work, name=f"worker-{i}", daemon=True)
                    for i in range(self.workers)]
        for thread in threads:
            thread.start()
        try:
            while not self.stop.wait(1):
                pass
        except KeyboardInterrupt:
            self.stop.set()
        if self.lease is not None and self.leading.is_set():
            self.lease.release()
