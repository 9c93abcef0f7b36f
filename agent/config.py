"""The agent's configuration (contract.config's pattern): flags override the environment, whose
names the webhook injects (contract.agent_api.AgentEnv)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from customer_friendly.certs.names import CONTROLLER_CN
from customer_friendly.contract.agent_api import AgentEnv
from customer_friendly.contract.archive import Limits
from customer_friendly.contract.config import Setting, flag, number, read, whole

# Every setting, with the environment name that backs it; the webhook injects the AgentEnv ones.
SETTINGS: tuple[Setting, ...] = (
    Setting(AgentEnv.CODE_PATH, "--code-path", "/app", "code volume mount (releases/, current, previous)"),
    Setting(AgentEnv.RELEASE, "--release", None, "release to fetch in `fetch` mode (from the release ConfigMap)"),
    Setting(AgentEnv.RELEASE_DEFAULT, "--release-default", None, f"fallback when {AgentEnv.RELEASE} is unset"),
    Setting(AgentEnv.SOURCE, "--source", None, "release URI template with {release} (from the release ConfigMap)"),
    Setting(AgentEnv.SOURCE_DEFAULT, "--source-default", None, f"fallback when {AgentEnv.SOURCE} is unset"),
    Setting(AgentEnv.KEEP_RELEASES, "--keep-releases", "3", "releases kept on the volume"),
    Setting(AgentEnv.REQUIRE_SHA256, "--require-sha256", "false", "refuse artifacts without a .sha256"),
    Setting("CFO_MAX_ARCHIVE_BYTES", "--max-archive-bytes", str(2 * 1024**3), "largest download and extracted size"),
    Setting("CFO_AGENT_BIND", "--bind", "0.0.0.0", "address the API listens on"),
    Setting(AgentEnv.AGENT_PORT, "--port", "9443", "port of the mutual-TLS API"),
    Setting(AgentEnv.CLIENT_CA, "--client-ca", None, "PEM of the CA whose client certificates are accepted"),
    Setting("CFO_CLIENT_CA_FILE", "--client-ca-file", None, "file holding that PEM, instead of --client-ca"),
    Setting("CFO_CLIENT_NAME", "--client-name", CONTROLLER_CN, "the only client accepted: the name (CN or DNS SAN) a "
     "clientAuth certificate from that CA must carry"),
    Setting("CFO_TLS_CERT", "--tls-cert", None,
            "serving certificate (default: one made in memory at start, never written)"),
    Setting("CFO_TLS_KEY", "--tls-key", None, "serving key; refused on the code volume, which the app mounts too"),
    Setting("CFO_AGENT_MAX_CONNECTIONS", "--max-connections", "512", "open API connections at most; beyond it the "
     "oldest idle one is closed"),
    Setting("CFO_AGENT_WORKERS", "--workers", "4", "threads answering API requests (idle connections hold none)"),
    Setting("CFO_AGENT_HANDSHAKE_SECONDS", "--handshake-seconds", "10", "a TLS handshake not done by then is closed"),
    Setting("CFO_AGENT_IDLE_SECONDS", "--idle-seconds", "30", "a connection without a request for this long is closed"),
    Setting("CFO_AGENT_REQUEST_SECONDS", "--request-seconds", "10", "a request not fully received by then is closed"),
    Setting("CFO_PUMA_PIDFILE", "--puma-pidfile", None, "Puma's pidfile (default: find the master by its title)"),
    Setting("CFO_PUMA_CONTROL_URL", "--puma-control-url", None, "Puma control app URL, to watch restarts via /stats"),
    Setting("CFO_PUMA_CONTROL_TOKEN", "--puma-control-token", None, "control app token"),
    Setting("CFO_PROCESS_PIDFILE", "--process-pidfile", None, "drain/signal restarts: the worker's pidfile "
     "(default: find it by the requested title pattern)"),
    Setting("CFO_PUMA_CONFIG", "--puma-config", None, "Puma config to check for preload_app! "
     "(default: <code>/current/config/puma.rb)"),
    Setting(AgentEnv.HEALTH_URL, "--health-url", None, "after a restart, done only once this URL answers "
            "below 400 (traffic: drain: the app's readiness probe)"),
    Setting("CFO_RESTART_DEADLINE_SECONDS", "--restart-deadline", "120", "a restart not done by then has failed"),
    Setting("CFO_BOOT_FAILURES", "--boot-failures", "3", "a phased or hot restart fails at once when this many of its "
     "new workers have exited before it was done (a release that cannot boot); 0: only the deadline"),
)


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
    health_url: str | None = None

    @property
    def limits(self) -> Limits:
        """What a release archive may hold: the one place both `fetch` and `serve` take it from,
        so the init container and the sidecar never accept different archives."""
        return Limits(max_bytes=self.max_archive_bytes)

    @classmethod
    def from_env(cls, args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> AgentConfig:
        """The one place the agent's configuration is read; ValueError (or OSError for the CA
        file) names the setting."""
        values = read(SETTINGS, args, env)
        ca = values[AgentEnv.CLIENT_CA]
        if not ca and values["CFO_CLIENT_CA_FILE"]:
            ca = Path(values["CFO_CLIENT_CA_FILE"] or "").read_text()
        code = Path(values[AgentEnv.CODE_PATH] or "/app")

        def path(name: str) -> Path | None:
            value = values[name]
            return Path(value) if value else None

        return cls(
            code_path=code,
            release=values[AgentEnv.RELEASE] or values[AgentEnv.RELEASE_DEFAULT],
            source=values[AgentEnv.SOURCE] or values[AgentEnv.SOURCE_DEFAULT],
            keep_releases=whole(values, AgentEnv.KEEP_RELEASES, 1),
            require_sha256=flag(values, AgentEnv.REQUIRE_SHA256),
            max_archive_bytes=whole(values, "CFO_MAX_ARCHIVE_BYTES", 1),
            bind=values["CFO_AGENT_BIND"] or "0.0.0.0",
            port=whole(values, AgentEnv.AGENT_PORT, 0),  # 0: any free port (tests)
            client_ca_pem=ca or None,
            tls_cert=path("CFO_TLS_CERT"),
            tls_key=path("CFO_TLS_KEY"),
            puma_pidfile=path("CFO_PUMA_PIDFILE"),
            puma_control_url=values["CFO_PUMA_CONTROL_URL"],
            puma_control_token=values["CFO_PUMA_CONTROL_TOKEN"],
            puma_config=path("CFO_PUMA_CONFIG") or code / "current" / "config" / "puma.rb",
            restart_deadline=number(values, "CFO_RESTART_DEADLINE_SECONDS", 0.1),
            process_pidfile=path("CFO_PROCESS_PIDFILE"),
            boot_failures=whole(values, "CFO_BOOT_FAILURES", 0),
            client_name=values["CFO_CLIENT_NAME"] or CONTROLLER_CN,
            max_connections=whole(values, "CFO_AGENT_MAX_CONNECTIONS", 1),
            workers=whole(values, "CFO_AGENT_WORKERS", 1),
            handshake_seconds=number(values, "CFO_AGENT_HANDSHAKE_SECONDS", 0.1),
            idle_seconds=number(values, "CFO_AGENT_IDLE_SECONDS", 0.1),
            request_seconds=number(values, "CFO_AGENT_REQUEST_SECONDS", 0.1),
            health_url=values[AgentEnv.HEALTH_URL],
        )
