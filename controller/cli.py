"""`cfo-controller`: roll new releases through opted-in Deployments, in place."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from kubernetes import client, config
from prometheus_client import start_http_server

from controller.agents import AgentClient
from controller.kube import Kube
from controller.loop import Controller, Lease
from controller.reconcile import Reconciler, Settings
from webhook.config import PolicySource


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="cfo-controller", description=__doc__)
    p.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="kubeconfig (default: in-cluster, then KUBECONFIG)")
    p.add_argument("--cert", type=Path, default=Path(env("CFO_TLS_CERT", "/etc/cfo/tls/tls.crt")),
                   help="client certificate the agents accept (env CFO_TLS_CERT)")
    p.add_argument("--key", type=Path, default=Path(env("CFO_TLS_KEY", "/etc/cfo/tls/tls.key")),
                   help="its key (env CFO_TLS_KEY)")
    p.add_argument("--policy", default=env("CFO_POLICY_PATH"), help="policy ConfigMap directory or YAML file")
    p.add_argument("--namespace", default=env("CFO_NAMESPACE", "customer-friendly-system"),
                   help="namespace of the leader Lease (env CFO_NAMESPACE)")
    p.add_argument("--identity", default=env("CFO_IDENTITY", socket.gethostname() + f"-{os.getpid()}"),
                   help="this replica's name in the Lease")
    p.add_argument("--no-leader-election", action="store_true", help="reconcile without holding the Lease")
    p.add_argument("--workers", type=int, default=int(env("CFO_WORKERS", "4")), help="Deployments reconciled at once")
    p.add_argument("--metrics-port", type=int, default=int(env("CFO_METRICS_PORT", "8080")),
                   help="port of /metrics (0: off)")
    p.add_argument("--metrics-bind", default=env("CFO_METRICS_BIND", "0.0.0.0"), help="address of /metrics")
    p.add_argument("--agent-port", type=int, default=int(env("CFO_AGENT_PORT", "9443")),
                   help="agent port when a pod does not name one")
    p.add_argument("--batch-deadline", type=float, default=float(env("CFO_BATCH_DEADLINE_SECONDS", "300")),
                   help="a batch not done by then fails the rollout")
    p.add_argument("--log-level", default=env("CFO_LOG_LEVEL", "info"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=args.kubeconfig)
    api = client.ApiClient()
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_bind)
    policy = PolicySource(Path(args.policy) if args.policy else None)
    reconciler = Reconciler(Kube(api), AgentClient(args.cert, args.key), policy,
                            Settings(default_agent_port=args.agent_port, batch_deadline_seconds=args.batch_deadline))
    lease = None if args.no_leader_election else Lease(client.CoordinationV1Api(api), args.namespace,
                                                       "customer-friendly-controller", args.identity)
    controller = Controller(reconciler.reconcile, client.AppsV1Api(api), lease, workers=args.workers)
    signal.signal(signal.SIGTERM, lambda *_: controller.stop.set())
    controller.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
