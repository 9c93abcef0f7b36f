"""Dropped requests across many phased restarts: Puma's queue_requests on vs off, side by side.

    .venv/bin/python -m bench.puma_shutdown_race --restarts 100 [--rate 200]

Each variant: one real Puma (2 workers) behind the real agent, a constant POST load, and
back-to-back phased restarts v1 <-> v2 through the agent API. Load the other core(s) to see
the race more often (it needs a worker to be stopped just as it accepts a connection).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testbed.controlplane import ROOT
from testbed.load import Load
from testbed.puma_app import AgentClient, AgentProcess, Puma, publish, release_archive
from testbed.webhook import ensure_certs


def run(extra: tuple[str, ...], restarts: int, rate: float) -> tuple[int, int]:
    tmp = Path(tempfile.mkdtemp(prefix="cfo-bench-"))
    ensure_certs(tmp / "certs")
    for release in ("v1", "v2"):
        publish(tmp / "art", release, release_archive(release))
    code, source = tmp / "code", f"file://{tmp / 'art'}/{{release}}.tar.gz"
    subprocess.run([sys.executable, "-m", "customer_friendly.agent", "fetch"], cwd=ROOT, check=True,
                    capture_output=True,
                   env={**os.environ, "CFO_CODE_PATH": str(code), "CFO_RELEASE_DEFAULT": "v1",
                        "CFO_SOURCE_DEFAULT": source})
    puma = Puma(code, tmp, extra_config=extra).start()
    agent = AgentProcess(code, tmp, tmp / "certs" / "ca.crt", {"CFO_PUMA_CONTROL_URL": puma.control_url,
                                                               "CFO_PUMA_CONTROL_TOKEN": puma.token}).start()
    client = AgentClient(agent.url, tmp / "certs" / "controller.crt", tmp / "certs" / "controller.key")
    load = Load("127.0.0.1", puma.port, rate=rate).start()
    try:
        time.sleep(1)
        for i in range(restarts):
            client.call("POST", "/v1/release", {"release": "v2" if i % 2 == 0 else "v1", "source": source})
            if client.wait(timeout=60)["state"] != "done":
                raise RuntimeError("a restart failed")
        time.sleep(1)
    finally:
        load.stop()
        agent.stop()
        puma.stop()
    return len(load.samples), len(load.failures())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--restarts", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    rows = []
    for name, extra in (("queue_requests true (default)", ()), ("queue_requests false", ("queue_requests false",))):
        sent, failed = run(extra, args.restarts, args.rate)
        rows.append((name, sent, failed))
        print(f"{name:32} sent {sent:6}  failed {failed:4}  ({failed / sent * 1e4:.1f} per 10k)", flush=True)
    base, tuned = rows[0][2] / rows[0][1], rows[1][2] / rows[1][1]
    print(f"failure-rate ratio default/tuned: {'inf' if tuned == 0 and base else base / tuned if tuned else 1.0}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
