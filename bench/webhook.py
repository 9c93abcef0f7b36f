"""What the webhook costs: per request, per `kubectl apply`, and per mutation.

    .venv/bin/python -m bench.webhook [--seconds 5] [--requests 200]

1. Admission reviews per second and p50/p99 latency, a realistic Deployment review sent
   straight to the webhook over TLS with keep-alive, under gunicorn gthread with 1, 2 and 4
   threads; the same server settings serving a bare Flask handler that answers
   `allowed: true` give the baseline, and the ratio is our overhead.
2. Through a real kube-apiserver: a server-side dry-run create of an opted-in Deployment and
   of one that is not opted in, with the webhook registered; the difference is what we add to
   a user's `kubectl apply`.
3. The pure mutation (`review.admit`) alone, in microseconds per Deployment.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path
from typing import Any

from kubernetes import client, config

from customer_friendly.contract.policy import Policy
from customer_friendly.webhook.review import admit
from testbed.controlplane import ROOT, ControlPlane, free_port, terminate
from testbed.webhook import WebhookServer, register

RESULTS = Path(os.environ.get("CFO_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
DEPLOYMENT = json.loads((ROOT / "tests" / "fixtures" / "deployment.json").read_text())
REVIEW: dict[str, Any] = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "0b7c2e9e-bench", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
    "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
    "operation": "CREATE", "namespace": "shop", "name": "web", "object": DEPLOYMENT,
    "userInfo": {"username": "kubernetes-admin"}, "dryRun": False}}


def serve(app: str, port: int, threads: int, certs: Path) -> subprocess.Popen[bytes]:
    """gunicorn gthread over TLS, exactly as cfo-webhook configures it, for `app` (ours or bare)."""
    code = ("import sys; from customer_friendly.webhook import serve; from bench.webhook import bare_app; "
            "from customer_friendly.webhook.config import WebhookConfig; "
            "config = WebhookConfig.from_env(serve._parser().parse_args(sys.argv[1:])); "
            "tls = serve.ReloadingTLS(config.cert, config.key); "
            "from customer_friendly.webhook.app import create_app; "
            f"factory = {'bare_app' if app == 'bare' else 'create_app'}; "
            "serve._Gunicorn(factory, serve.gunicorn_options(config, tls)).run()")
    proc = subprocess.Popen([sys.executable, "-c", code, "--bind", f"127.0.0.1:{port}", "--cert",
                             str(certs / "webhook.crt"), "--key", str(certs / "webhook.key"), "--threads",
                             str(threads), "--workers", "1", "--log-level", "warning"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=2)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            return proc
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{app} webhook did not start")


def bare_app() -> Any:
    """The baseline: Flask under the same gunicorn settings, answering every review allowed."""
    from flask import Flask, jsonify, request

    app = Flask(__name__)

    @app.post("/mutate")
    def mutate() -> Any:
        uid = request.get_json(force=True)["request"]["uid"]
        return jsonify(apiVersion="admission.k8s.io/v1", kind="AdmissionReview", response={"uid": uid, "allowed": True})

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    return app


def hammer(port: int, certs: Path, seconds: float, clients: int = 4) -> dict[str, float]:
    body = json.dumps(REVIEW).encode()
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def worker() -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)  # kept alive
        while time.monotonic() < stop:
            started = time.perf_counter()
            conn.request("POST", "/mutate", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    return {"rps": len(latencies) / seconds, "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000}


def direct(seconds: float) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp)
        subprocess.run([sys.executable, "-m", "customer_friendly.certs", "ensure", "--out", str(certs), "--ip",
                        "127.0.0.1"],
                       cwd=ROOT, check=True, capture_output=True)
        for threads in (1, 2, 4):
            row: dict[str, Any] = {"threads": threads}
            for app in ("bare", "ours"):
                port = free_port()
                proc = serve(app, port, threads, certs)
                try:
                    hammer(port, certs, 1.0)  # warm up
                    row[app] = hammer(port, certs, seconds)
                finally:
                    terminate(proc, 10)
            row["overhead_p50"] = row["ours"]["p50_ms"] / row["bare"]["p50_ms"]
            row["throughput_ratio"] = row["ours"]["rps"] / row["bare"]["rps"]
            rows.append(row)
    return rows


def through_apiserver(requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = ControlPlane(Path(tmp) / "cluster", with_controller_manager=False).start()
        webhook = WebhookServer(Path(tmp) / "webhook")
        try:
            webhook.start()
            register(cluster, webhook)
            apps = client.AppsV1Api(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
            results: dict[str, Any] = {}
            for label, opted in (("not opted in", False), ("opted in", True)):
                body = copy.deepcopy(DEPLOYMENT)
                if not opted:
                    body["metadata"]["annotations"] = {}
                for _ in range(20):  # warm up
                    apps.create_namespaced_deployment("default", body, dry_run="All")
                times = []
                for _ in range(requests):
                    started = time.perf_counter()
                    apps.create_namespaced_deployment("default", body, dry_run="All")
                    times.append(time.perf_counter() - started)
                times.sort()
                results[label] = {"p50_ms": statistics.median(times) * 1000,
                                  "p99_ms": times[int(len(times) * 0.99)] * 1000}
            results["added_p50_ms"] = results["opted in"]["p50_ms"] - results["not opted in"]["p50_ms"]
            return results
        finally:
            webhook.stop()
            cluster.stop()


def mutation_microseconds() -> float:
    request: dict[str, Any] = REVIEW["request"]
    policy = Policy()
    number = 2000
    best = min(timeit.repeat(lambda: admit(request, policy), number=number, repeat=5))
    return best / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="load per server setting")
    parser.add_argument("--requests", type=int, default=200, help="dry-run creates per kind")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = direct(args.seconds)
    print("1. reviews straight to the webhook (TLS, keep-alive, 4 client connections)")
    print(f"{'threads':>7} {'bare rps':>9} {'ours rps':>9} {'ratio':>6} {'bare p50':>9} {'ours p50':>9} "
          f"{'ratio':>6} {'ours p99':>9}")
    for r in rows:
        print(f"{r['threads']:>7} {r['bare']['rps']:>9.0f} {r['ours']['rps']:>9.0f} {r['throughput_ratio']:>6.2f} "
              f"{r['bare']['p50_ms']:>7.2f}ms {r['ours']['p50_ms']:>7.2f}ms {r['overhead_p50']:>6.2f} "
              f"{r['ours']['p99_ms']:>7.2f}ms")
    api = through_apiserver(args.requests)
    print("\n2. server-side dry-run create through kube-apiserver, webhook registered")
    for label in ("not opted in", "opted in"):
        print(f"   {label:13} p50 {api[label]['p50_ms']:6.2f} ms   p99 {api[label]['p99_ms']:6.2f} ms")
    print(f"   what we add to a kubectl apply: {api['added_p50_ms']:.2f} ms at the median")
    micros = mutation_microseconds()
    print(f"\n3. the pure mutation (review.admit, incl. the JSON patch): {micros:.0f} µs per Deployment")
    (RESULTS / "webhook.json").write_text(json.dumps({"direct": rows, "apiserver": api, "mutation_us": micros},
                                                     indent=2))
    chart(rows, RESULTS / "webhook.png")
    print(f"\nwrote {RESULTS / 'webhook.json'} and {RESULTS / 'webhook.png'}")
    return 0


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    threads = [str(r["threads"]) for r in rows]
    width = 0.38
    xs = range(len(rows))
    ax.bar([x - width / 2 for x in xs], [r["bare"]["rps"] for r in rows], width, label="bare Flask (allowed)")
    ax.bar([x + width / 2 for x in xs], [r["ours"]["rps"] for r in rows], width, label="customer-friendly webhook")
    ax.set_xticks(list(xs), threads)
    ax.set_xlabel("gunicorn gthread threads")
    ax.set_ylabel("admission reviews / s")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
