"""agent/health.py against a real HTTP server on loopback: done waits for the app's answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from customer_friendly.agent.health import NotHealthy, answers, wait_until_healthy


class App(BaseHTTPRequestHandler):
    """Answers 503 until `ready_at` (as a booting app behind its readiness path), then 200."""

    ready_at = 0.0

    def do_GET(self) -> None:
        self.send_response(200 if time.monotonic() >= App.ready_at else 503)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def app_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), App)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/up"
    server.shutdown()
    server.server_close()


def test_done_waits_until_the_app_answers(app_url: str) -> None:
    App.ready_at = time.monotonic() + 0.6
    assert answers(app_url) == (False, "HTTP 503")
    wait_until_healthy(app_url, time.monotonic() + 10)
    assert time.monotonic() >= App.ready_at and answers(app_url) == (True, "HTTP 200")


def test_an_app_that_never_answers_fails_the_restart_saying_why(app_url: str) -> None:
    App.ready_at = time.monotonic() + 3600
    with pytest.raises(NotHealthy, match=r"did not answer its readiness check .*/up after the restart \(HTTP 503\)"):
        wait_until_healthy(app_url, time.monotonic() + 0.5)
    closed = app_url.rsplit(":", 1)[0] + ":9/up"  # discard port: nothing listens
    ok, why = answers(closed)
    assert not ok and why
