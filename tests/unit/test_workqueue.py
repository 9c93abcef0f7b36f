"""The controller's work queue: due times, de-duplication, one worker per key."""

from __future__ import annotations

import threading
import time

from customer_friendly.controller.loop import WorkQueue

STOP = threading.Event()


def test_keys_come_out_when_due_and_in_order() -> None:
    queue = WorkQueue()
    queue.add(("ns", "late"), 0.2)
    queue.add(("ns", "now"))
    assert queue.get(STOP) == ("ns", "now")
    started = time.monotonic()
    assert queue.get(STOP) == ("ns", "late")
    assert time.monotonic() - started > 0.1


def test_adding_a_key_twice_keeps_the_earlier_time() -> None:
    queue = WorkQueue()
    queue.add(("ns", "a"), 5)
    queue.add(("ns", "a"), 0)
    queue.add(("ns", "a"), 5)
    assert queue.get(STOP) == ("ns", "a")
    queue.done(("ns", "a"))
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    assert queue.get(stop) is None  # no duplicate left behind


def test_a_key_being_worked_on_is_not_handed_out_again_until_done() -> None:
    queue = WorkQueue()
    queue.add(("ns", "a"))
    assert queue.get(STOP) == ("ns", "a")
    queue.add(("ns", "a"))  # a change arrives while a worker holds the key
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    assert queue.get(stop) is None
    queue.done(("ns", "a"))
    assert queue.get(STOP) == ("ns", "a")
