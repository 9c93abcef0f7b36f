"""A constant-rate, open-loop POST load: requests are sent on schedule whatever the latency.

Each request uses a new connection (as a balancer with no upstream keep-alive does), and a
POST, which no client or proxy retries, so every dropped request counts as a failure.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    sent_at: float
    latency: float
    ok: bool
    body: str
    lag: float = 0.0
    """How late the generator itself started the request (seconds after its schedule): not part of
    `latency`, which runs from the start of the connection. High lag means the generator was starved."""


@dataclass
class Load:
    host: str
    port: int
    rate: float = 200.0
    timeout: float = 30.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _one(self, sent_at: float) -> None:
        started = time.monotonic()
        try:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            conn.request("POST", "/", body=b"order=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
            response = conn.getresponse()
            body = response.read().decode().strip()
            ok = response.status == 200
            conn.close()
        except OSError as err:
            ok, body = False, f"{type(err).__name__}: {err}"
        self.samples.append(Sample(sent_at, time.monotonic() - started, ok, body, started - sent_at))

    def _run(self) -> None:
        interval = 1.0 / self.rate
        with ThreadPoolExecutor(max_workers=64) as pool:
            next_at = time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic()
                if now < next_at:
                    time.sleep(min(next_at - now, 0.005))
                    continue
                pool.submit(self._one, next_at)
                next_at += interval

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.sent_at <= end]

    @staticmethod
    def p99(samples: list[Sample]) -> float:
        latencies = sorted(s.latency for s in samples)
        return statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 2 else float("nan")
