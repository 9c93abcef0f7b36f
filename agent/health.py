"""After a restart, wait until the app itself answers (traffic: drain).

Puma's processes being back is not the app serving: a worker still loading the app holds every
request routed to it. With traffic: drain the controller lets the pod back into the Service as
soon as the agent says done, so done waits for the app's own readiness probe, asked from inside
the pod (the webhook passes it as CFO_HEALTH_URL).
"""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request

from customer_friendly.agent.puma import PumaError

POLL_SECONDS = 0.2
REQUEST_SECONDS = 2.0


class NotHealthy(PumaError):
    """The app did not answer its readiness check before the restart's deadline."""


def answers(url: str, timeout: float = REQUEST_SECONDS) -> tuple[bool, str]:
    """(True, "") when `url` answers below 400; else (False, what happened). Loopback only, so
    an HTTPS probe's certificate is not verified, as the kubelet does not verify it either."""
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status < 400, f"HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return False, f"HTTP {err.code}"
    except (OSError, ValueError) as err:
        return False, str(getattr(err, "reason", err))


def wait_until_healthy(url: str, deadline: float) -> None:
    """Polls `url` until it answers, or raises NotHealthy at `deadline` (time.monotonic())."""
    last = "not asked"
    while True:
        ok, last = answers(url, min(REQUEST_SECONDS, max(0.1, deadline - time.monotonic())))
        if ok:
            return
        if time.monotonic() >= deadline:
            raise NotHealthy(f"the app did not answer its readiness check {url} after the restart ({last})")
        time.sleep(POLL_SECONDS)
