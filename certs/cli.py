"""`cfo-certs`: bootstrap and rotate the installation's certificates.

Run it as often as you like (a CronJob, `make upgrade`, CI): valid certificates are kept,
those inside their renewal window are renewed, missing ones are created.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import logging
import sys
from pathlib import Path

from customer_friendly.certs.names import CONTROLLER_CN
from customer_friendly.certs.pki import LeafSpec, Plan, Usage, Validity, plan
from customer_friendly.certs.store import CA, DirectoryStore, SecretStore, Store
from customer_friendly.contract.policy import INSTALL_NAMESPACE

logger = logging.getLogger(__name__)

DEFAULT_NAMESPACE = INSTALL_NAMESPACE
DEFAULT_SERVICE = "customer-friendly-webhook"


def leaf_specs(service: str, namespace: str, dns: list[str], ips: list[str]) -> dict[str, LeafSpec]:
    """The webhook's serving certificate and the controller's client certificate."""
    svc_names = (service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
                 f"{service}.{namespace}.svc.cluster.local")
    webhook_dns = tuple(dict.fromkeys([*svc_names, *dns]))
    return {
        "webhook": LeafSpec(f"{service}.{namespace}.svc", Usage.SERVER, webhook_dns, tuple(ips)),
        "controller": LeafSpec(CONTROLLER_CN, Usage.CLIENT),
    }


def ensure(store: Store, specs: dict[str, LeafSpec], validity: Validity) -> Plan:
    """Keep what is valid, renew what is not, create what is missing; log each decision."""
    result = plan(store.load(CA), {name: store.load(name) for name in specs}, specs, validity,
                  dt.datetime.now(dt.UTC))
    store.save(result)
    for d in result.decisions:
        logger.info("%-10s %s%s", d.name, d.action, f" ({d.reason})" if d.reason else "")
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cfo-certs",
        description="Create or renew the CA, the webhook serving certificate and the controller's "
        "client certificate (ECDSA P-256). Valid certificates are kept.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def add_target(sp: argparse.ArgumentParser) -> None:
        where = sp.add_mutually_exclusive_group(required=True)
        where.add_argument("--out", type=Path, metavar="DIR",
                           help="directory of PEM files: ca.crt/key, webhook.crt/key, controller.crt/key")
        where.add_argument("--secrets", action="store_true",
                           help="Secrets customer-friendly-{ca,webhook-tls,controller-tls} in --namespace, "
                           "using the current kubeconfig or in-cluster credentials")
        sp.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                        help=f"install namespace, used in the webhook's DNS names (default {DEFAULT_NAMESPACE})")

    ensure = sub.add_parser("ensure", help="create what is missing, renew what is near expiry")
    add_target(ensure)
    ensure.add_argument("--service", default=DEFAULT_SERVICE,
                        help=f"webhook Service name (default {DEFAULT_SERVICE})")
    ensure.add_argument("--dns", action="append", default=[], metavar="NAME",
                        help="extra DNS SAN for the webhook certificate (repeatable)")
    ensure.add_argument("--ip", action="append", default=[], metavar="ADDR",
                        help="extra IP SAN for the webhook certificate (repeatable)")
    ensure.add_argument("--ca-days", type=int, default=3650, help="CA validity in days (default 3650)")
    ensure.add_argument("--days", type=int, default=365, help="leaf validity in days (default 365)")
    ensure.add_argument("--renew-before-days", type=float, default=None,
                        help="renew when fewer days than this remain (default: a third of the lifetime)")
    ensure.add_argument("--print-ca-bundle", action="store_true",
                        help="print the base64 caBundle on stdout when done")

    bundle = sub.add_parser("ca-bundle", help="print the base64 caBundle for a webhook configuration")
    add_target(bundle)
    return p


def _store(args: argparse.Namespace) -> Store:
    if args.out is not None:
        return DirectoryStore(args.out)
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return SecretStore(client.CoreV1Api(), args.namespace)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    args = _parser().parse_args(argv)
    store = _store(args)
    if args.command == "ca-bundle":
        ca = store.load(CA)
        if ca is None:
            print("cfo-certs: no CA found; run `cfo-certs ensure` first", file=sys.stderr)
            return 1
        print(base64.b64encode(ca.cert_pem()).decode())
        return 0

    try:
        renew = None if args.renew_before_days is None else dt.timedelta(days=args.renew_before_days)
        validity = Validity(ca_days=args.ca_days, leaf_days=args.days, renew_before=renew)
    except ValueError as err:
        print(f"cfo-certs: {err}", file=sys.stderr)
        return 2
    result = ensure(store, leaf_specs(args.service, args.namespace, args.dns, args.ip), validity)
    if args.print_ca_bundle:
        print(base64.b64encode(result.ca.cert_pem()).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
