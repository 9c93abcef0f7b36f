"""A leader that cannot renew its Lease stops reconciling before the Lease can pass to another
replica, and a worker that was waiting for work when the Lease was lost does not reconcile it.

Found by the chaos suite (kube-apiserver stopped for a few seconds): the old leader's 16 workers,
already waiting in the queue, went on reconciling after "lost the lease; pausing" while the new
leader did the same, so both asked the same agent for the same release."""

from __future__ import annotations

import threading
import time

from customer_friendly.controller.loop import Controller


class StuckRenewal:
    """Our Lease as seen from the loop: the first renewal succeeds, later ones hang, as a call to
    an API server that went away does until its timeout."""

    duration = 0.6

    def __init__(self) -> None:
        self.calls = 0
        self.unblock = threading.Event()

    def try_acquire(self) -> bool:
        self.calls += 1
        if self.calls > 1:
            self.unblock.wait(10)
            return False
        return True

    def release(self) -> None:
        pass


def test_a_leader_whose_renewal_hangs_stops_reconciling_at_its_renew_deadline() -> None:
    reconciled: list[tuple[str, str]] = []

    def reconcile(namespace: str, name: str) -> float | None:
        reconciled.append((namespace, name))
        return None

    lease = StuckRenewal()
    controller = Controller(reconcile, lambda enqueue, stop: None, lease, workers=4)  # type: ignore[arg-type]
    assert abs(controller.renew_deadline - 0.4) < 1e-9
    thread = threading.Thread(target=controller.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not controller.leads() and time.monotonic() < deadline:
            time.sleep(0.01)
        controller._enqueue(("ns", "first"))
        time.sleep(0.3)
        assert reconciled == [("ns", "first")]
        time.sleep(0.5)  # the renewal has hung past the deadline: the workers wait in the queue
        assert controller.leading.is_set() and not controller.leads()
        controller._enqueue(("ns", "second"))
        time.sleep(0.5)
        assert reconciled == [("ns", "first")]  # not reconciled by a replica that may have lost the Lease
    finally:
        controller.stop.set()
        lease.unblock.set()
        thread.join(5)
