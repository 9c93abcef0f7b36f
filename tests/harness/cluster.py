"""`make cluster`: the test control plane (and the webhook), started by hand.

Prints the KUBECONFIG to use and keeps everything running until Ctrl-C. State lives in
.cluster/ and is removed on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import threading
from pathlib import Path

from tests.harness.controlplane import ROOT, ControlPlane
from tests.harness.webhook import WebhookServer, register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make cluster", description=__doc__)
    parser.add_argument("--dir", type=Path, default=ROOT / ".cluster", help="state directory (default .cluster/)")
    parser.add_argument("--no-webhook", action="store_true", help="start only etcd and the Kubernetes components")
    parser.add_argument("--policy", type=Path, default=None,
                        help="policy file or directory for the webhook (default: built-in defaults)")
    args = parser.parse_args(argv)
    shutil.rmtree(args.dir, ignore_errors=True)
    print("starting etcd, kube-apiserver and kube-controller-manager ...", file=sys.stderr)
    cluster = ControlPlane(args.dir / "control-plane").start()
    webhook = None
    try:
        if not args.no_webhook:
            print("starting the webhook (gunicorn, TLS) and registering it ...", file=sys.stderr)
            webhook = WebhookServer(args.dir / "webhook", policy_path=args.policy).start()
            register(cluster, webhook)
        print(f"\nexport KUBECONFIG={cluster.kubeconfig}")
        print(f"export PATH={cluster.bin_dir}:$PATH   # kubectl {cluster.kubectl_path}")
        print(f"# API server {cluster.server}; logs in {args.dir}", file=sys.stderr)
        if webhook:
            print(f"# webhook {webhook.url}; log {webhook.log}", file=sys.stderr)
        print("# Ctrl-C stops everything.", file=sys.stderr, flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    finally:
        if webhook:
            webhook.stop()
        cluster.stop()
        shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
