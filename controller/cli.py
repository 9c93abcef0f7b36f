"""`cfo-controller`: roll new releases through opted-in Deployments, in place."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from kubernetes import client, config
from prometheus_client import REGISTRY, start_http_server

from customer_friendly import contract as c
from customer_friendly.contract.config import add_arguments
from customer_friendly.contract.policy_source import PolicySource
from customer_friendly.controller.agents import AgentClient
from customer_friendly.controller.cache import CachedKube, ClusterCache
from customer_friendly.controller.config import SETTINGS, ControllerConfig
from customer_friendly.controller.loop import Controller, Lease
from customer_friendly.controller.metrics import RolloutGauges
from customer_friendly.controller.reconcile import Reconciler


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cfo-controller", description=__doc__)
    add_arguments(parser, SETTINGS)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        settings = ControllerConfig.from_env(_parser().parse_args(argv))
    except ValueError as err:
        print(f"cfo-controller: bad setting: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=settings.kubeconfig)
    configuration = client.Configuration.get_default_copy()
    # Every worker may write at once, beside the caches' three watches and a list: with the
    # client's default (5 per core) connections beyond it were closed after each request, and
    # opened again with a TLS handshake on both sides.
    configuration.connection_pool_maxsize = settings.workers + 8
    api = client.ApiClient(configuration)
    # The API server names a write's field manager after the user agent's first word: GitOps
    # tools can then tell (and ignore) what the controller writes, e.g. Argo CD's
    # managedFieldsManagers (README, "GitOps").
    api.user_agent = f"{c.CONTROLLER_FIELD_MANAGER}/0.1.0"
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_bind)
    cache = ClusterCache(api)
    REGISTRY.register(RolloutGauges(cache.deployments.all))
    reconciler = Reconciler(CachedKube(api, cache), AgentClient(settings.cert, settings.key),
                            PolicySource(settings.policy_path), settings)
    lease = Lease(client.CoordinationV1Api(api), settings.namespace, "customer-friendly-controller",
                  settings.identity) if settings.leader_election else None
    controller = Controller(reconciler.reconcile, cache.run, lease, workers=settings.workers)
    reconciler.may_act = controller.leads
    signal.signal(signal.SIGTERM, lambda *_: controller.stop.set())
    controller.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
