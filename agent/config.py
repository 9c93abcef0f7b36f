"""The agent's settings: flags override environment; names match what the webhook injects."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.archive import Limits
from certs.names import CONTROLLER_CN

# Every setting: (env name, flag, default, help). The webhook injects the CFO_* names.
SETTINGS: list[tuple[str, str, str | None, str]] = [
    ("CFO_CODE_PATH", "--code-path", "/app", "code volume mount (releases/, current, previous)"),
    ("CFO_RELEASE", "--release", None, "release to fetch in `fetch` mode (from the release ConfigMap)"),
    ("CFO_RELEASE_DEFAULT", "--release-default", None, "fallback when CFO_RELEASE is unset"),
    ("CFO_SOURCE", "--source", None, "release URI template with {release} (from the release ConfigMap)"),
    ("CFO_SOURCE_DEFAULT", "--source-default", None, "fallback when CFO_SOURCE is unset"),
    ("CFO_KEEP_RELEASES", "--keep-releases", "3", "releases kept on the volume"),
    ("CFO_REQUIRE_SHA256", "--require-sha256", "false", "refuse artifacts without a .sha256"),
    ("CFO_MAX_ARCHIVE_BYTES", "--max-archive-bytes", str(2 * 1024**3), "largest download and extracted size"),
    ("CFO_AGENT_BIND", "--bind", "0.0.0.0", "address the API listens on"),
    ("CFO_AGENT_PORT", "--port", "9443", "port of the mutual-TLS API"),
    ("CFO_CLIENT_CA", "--client-ca", None, "PEM of the CA whose client certificates are accepted"),
    ("CFO_CLIENT_CA_FILE", "--client-ca-file", None, "file holding that PEM, instead of --client-ca"),
    ("CFO_CLIENT_NAME", "--client-name", CONTROLLER_CN, "the only client accepted: the name (CN or DNS SAN) a "
     "clientAuth certificate from that CA must carry"),
    ("CFO_TLS_CERT", "--tls-cert", None, "serving certificate (default: one made in memory at start, never written)"),
    ("CFO_TLS_KEY", "--tls-key", None, "serving key; refused on the code volume, which the app mounts too"),
    ("CFO_AGENT_MAX_CONNECTIONS", "--max-connections", "512", "open API connections at most; beyond it the "
     "oldest idle one is closed"),
    ("CFO_AGENT_WORKERS", "--workers", "4", "threads answering API requests (idle connections hold none)"),
    ("CFO_AGENT_HANDSHAKE_SECONDS", "--handshake-seconds", "10", "a TLS handshake not done by then is closed"),
    ("CFO_AGENT_IDLE_SECONDS", "--idle-seconds", "30", "a connection without a request for this long is closed"),
    ("CFO_AGENT_REQUEST_SECONDS", "--request-seconds", "10", "a request not fully received by then is closed"),
    ("CFO_PUMA_PIDFILE", "--puma-pidfile", None, "Puma's pidfile (default: find the master by its title)"),
    ("CFO_PUMA_CONTROL_URL", "--puma-control-url", None, "Puma control app URL, to watch restarts via /stats"),
    ("CFO_PUMA_CONTROL_TOKEN", "--puma-control-token", None, "control app token"),
    ("CFO_PROCESS_PIDFILE", "--process-pidfile", None, "drain/signal restarts: the worker's pidfile "
     "(default: find it by the requested title pattern)"),
    ("CFO_PUMA_CONFIG", "--puma-config", None, "Puma config to check for preload_app! "
     "(default: <code>/current/config/puma.rb)"),
    ("CFO_RESTART_DEADLINE_SECONDS", "--restart-deadline", "120", "a restart not done by then has failed"),
    ("CFO_BOOT_FAILURES", "--boot-failures", "3", "a phased or hot restart fails at once when this many of its "
     "new workers have exited before it was done (a release that cannot boot); 0: only the deadline"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for env, flag, default, text in SETTINGS:
        shown = f"; default {default}" if default is not None else ""
        parser.add_argument(flag, dest=env, default=None, help=f"{text} (env {env}{shown})")


@dataclass(frozen=True)
class AgentConfig:
    code_path: Path
    release: str | None
    source: str | None
    keep_releases: int
    require_sha256: bool
    max_archive_bytes: int
    bind: str
    port: int
    client_ca_pem: str | None
    tls_cert: Path | None
    tls_key: Path | None
    puma_pidfile: Path | None
    puma_control_url: str | None
    puma_control_token: str | None
    puma_config: Path
    restart_deadline: float
    process_pidfile: Path | None = None
    boot_failures: int = 3
    client_name: str = CONTROLLER_CN
    max_connections: int = 512
    workers: int = 4
    handshake_seconds: float = 10.0
    idle_seconds: float = 30.0
    request_seconds: float = 10.0

    @property
    def limits(self) -> Limits:
        """What a release archive may hold: the one place both `fetch` and `serve` take it from,
        so the init container and the sidecar never accept different archives."""
        return Limits(max_bytes=self.max_archive_bytes)

    @classmethod
    def resolve(cls, args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> AgentConfig:
        env = os.environ if env is None else env
        values = {name: (getattr(args, name, None) if args else None) or env.get(name) or default
                  for name, _, default, _ in SETTINGS}
        ca = values["CFO_CLIENT_CA"]
        if not ca and values["CFO_CLIENT_CA_FILE"]:
            ca = Path(values["CFO_CLIENT_CA_FILE"]).read_text()
        code = Path(values["CFO_CODE_PATH"] or "/app")

        def path(name: str) -> Path | None:
            return Path(values[name]) if values[name] else None

        return cls(
            code_path=code,
            release=values["CFO_RELEASE"] or values["CFO_RELEASE_DEFAULT"],
            source=values["CFO_SOURCE"] or values["CFO_SOURCE_DEFAULT"],
            keep_releases=int(values["CFO_KEEP_RELEASES"]),
            require_sha256=str(values["CFO_REQUIRE_SHA256"]).lower() == "true",
            max_archive_bytes=int(values["CFO_MAX_ARCHIVE_BYTES"]),
            bind=values["CFO_AGENT_BIND"],
            port=int(values["CFO_AGENT_PORT"]),
            client_ca_pem=ca or None,
            tls_cert=path("CFO_TLS_CERT"),
            tls_key=path("CFO_TLS_KEY"),
            puma_pidfile=path("CFO_PUMA_PIDFILE"),
            puma_control_url=values["CFO_PUMA_CONTROL_URL"],
            puma_control_token=values["CFO_PUMA_CONTROL_TOKEN"],
            puma_config=path("CFO_PUMA_CONFIG") or code / "current" / "config" / "puma.rb",
            restart_deadline=float(values["CFO_RESTART_DEADLINE_SECONDS"]),
            process_pidfile=path("CFO_PROCESS_PIDFILE"),
            boot_failures=int(values["CFO_BOOT_FAILURES"]),
            client_name=values["CFO_CLIENT_NAME"],
            max_connections=_at_least(1, int(values["CFO_AGENT_MAX_CONNECTIONS"]), "CFO_AGENT_MAX_CONNECTIONS"),
            workers=_at_least(1, int(values["CFO_AGENT_WORKERS"]), "CFO_AGENT_WORKERS"),
            handshake_seconds=_at_least(0.1, float(values["CFO_AGENT_HANDSHAKE_SECONDS"]),
                                        "CFO_AGENT_HANDSHAKE_SECONDS"),
            idle_seconds=_at_least(0.1, float(values["CFO_AGENT_IDLE_SECONDS"]), "CFO_AGENT_IDLE_SECONDS"),
            request_seconds=_at_least(0.1, float(values["CFO_AGENT_REQUEST_SECONDS"]), "CFO_AGENT_REQUEST_SECONDS"),
        )


def _at_least(low: float, value: float, name: str) -> float:
    if not value >= low:  # also refuses nan
        raise ValueError(f"{name} must be at least {low:g}")
    return value
