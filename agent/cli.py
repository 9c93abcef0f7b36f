"""`cfo-agent`: the in-pod agent. `fetch` is the init container, `serve` the sidecar."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import ssl
import sys
import urllib.request

from customer_friendly.agent.config import SETTINGS, AgentConfig
from customer_friendly.agent.release import Layout, ReleaseError, install, prune, switch
from customer_friendly.contract.config import add_arguments


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cfo-agent", description="Fetch releases into the pod and phase-restart "
                                     "Puma. Every flag can also be set by the environment variable shown.")
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("fetch", "init container: fetch the wanted release and point current at it"),
                       ("serve", "sidecar: serve the mutual-TLS API")):
        add_arguments(sub.add_parser(name, help=text, description=text), SETTINGS)
    status = sub.add_parser("status", help="ask a running agent for its status (for debugging)")
    status.add_argument("--url", default="https://127.0.0.1:9443", help="agent URL")
    status.add_argument("--cert", required=True, help="client certificate signed by the installation's CA")
    status.add_argument("--key", required=True, help="its key")
    return parser


def one_line(text: str) -> str:
    """Messages end up in `kubectl describe pod` (the termination message): keep them to one line."""
    return " ".join(text.split())


def fetch_command(config: AgentConfig) -> int:
    """The init container. Any failure is one line on stderr and exit 1: a refused archive, a
    failed download, a full volume, and also our own bugs (their traceback at debug level)."""
    if not config.release or not config.source:
        print("cfo-agent fetch: no release or source (CFO_RELEASE[_DEFAULT], CFO_SOURCE[_DEFAULT])", file=sys.stderr)
        return 2
    layout = Layout(config.code_path)
    try:
        install(layout, config.release, config.source, require_sha256=config.require_sha256,
                limits=config.limits)
        switch(layout, config.release)
        prune(layout, config.keep_releases)
    except (ReleaseError, OSError, ValueError) as err:
        print(f"cfo-agent fetch: {one_line(str(err))}", file=sys.stderr)
        return 1
    except Exception as err:
        logging.getLogger(__name__).debug("fetch failed", exc_info=True)
        print(f"cfo-agent fetch: internal error: {one_line(f'{type(err).__name__}: {err}')}", file=sys.stderr)
        return 1
    print(f"release {config.release} is current in {config.code_path}")
    return 0


def serve_command(config: AgentConfig) -> int:
    from customer_friendly.agent.operation import Agent
    from customer_friendly.agent.server import make_server

    agent = Agent(config)
    agent.resume()  # a restart the previous agent process signalled is seen to its end
    server = make_server(agent, config)
    logging.getLogger(__name__).info("agent API on https://%s:%d", config.bind, config.port)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def status_command(args: argparse.Namespace) -> int:
    context = ssl.create_default_context()
    # The agent's certificate is made in memory at its start: no CA vouches for it (see controller.agents).
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.load_cert_chain(args.cert, args.key)
    with urllib.request.urlopen(f"{args.url}/v1/status", context=context, timeout=10) as response:
        print(json.dumps(json.load(response), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "status":
        return status_command(args)
    try:
        config = AgentConfig.from_env(args)
    except (ValueError, OSError) as err:  # a bad number in a setting, an unreadable CA file
        print(f"cfo-agent {args.command}: bad setting: {one_line(str(err))}", file=sys.stderr)
        return 2
    return fetch_command(config) if args.command == "fetch" else serve_command(config)


if __name__ == "__main__":
    sys.exit(main())
