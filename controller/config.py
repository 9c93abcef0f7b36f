"""The controller's configuration (contract.config's pattern): flags override the environment."""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from customer_friendly.contract.config import Setting, flag, number, read, whole
from customer_friendly.contract.policy import INSTALL_NAMESPACE

SETTINGS: tuple[Setting, ...] = (
    Setting("KUBECONFIG", "--kubeconfig", None, "kubeconfig (default: in-cluster, then KUBECONFIG)"),
    Setting("CFO_TLS_CERT", "--cert", "/etc/cfo/tls/tls.crt", "client certificate the agents accept"),
    Setting("CFO_TLS_KEY", "--key", "/etc/cfo/tls/tls.key", "its key"),
    Setting("CFO_POLICY_PATH", "--policy", None, "policy ConfigMap directory or YAML file; default: built-in"),
    Setting("CFO_NAMESPACE", "--namespace", INSTALL_NAMESPACE, "namespace of the leader Lease"),
    Setting("CFO_IDENTITY", "--identity", None, "this replica's name in the Lease (default: host name and pid)"),
    Setting("CFO_NO_LEADER_ELECTION", "--no-leader-election", "false", "reconcile without holding the Lease",
            switch=True),
    Setting("CFO_WORKERS", "--workers", "16", "Deployments reconciled at once (never one Deployment twice)"),
    Setting("CFO_METRICS_PORT", "--metrics-port", "8080", "port of /metrics (0: off)"),
    Setting("CFO_METRICS_BIND", "--metrics-bind", "0.0.0.0", "address of /metrics"),
    Setting("CFO_AGENT_PORT", "--agent-port", "9443", "agent port when a pod does not name one"),
    Setting("CFO_BATCH_DEADLINE_SECONDS", "--batch-deadline", "300", "a batch not done by then fails the rollout"),
    Setting("CFO_LOG_LEVEL", "--log-level", "info", "debug, info, warning or error"),
)


@dataclass(frozen=True)
class ControllerConfig:
    cert: Path = Path("/etc/cfo/tls/tls.crt")
    key: Path = Path("/etc/cfo/tls/tls.key")
    kubeconfig: str | None = None
    policy_path: Path | None = None
    namespace: str = INSTALL_NAMESPACE
    identity: str = "customer-friendly-controller"
    leader_election: bool = True
    workers: int = 16
    """Reconcile threads; mostly waiting on agents' answers, so more than the cores."""
    metrics_port: int = 8080
    metrics_bind: str = "0.0.0.0"
    default_agent_port: int = 9443
    """The agent's port when a pod does not name one."""
    batch_deadline_seconds: float = 300.0
    log_level: str = "info"

    @classmethod
    def from_env(cls, args: argparse.Namespace | None = None,
                 env: Mapping[str, str] | None = None) -> ControllerConfig:
        """The one place the controller's configuration is read; ValueError names the setting."""
        values = read(SETTINGS, args, env)
        return cls(
            kubeconfig=values["KUBECONFIG"],
            cert=Path(values["CFO_TLS_CERT"] or ""),
            key=Path(values["CFO_TLS_KEY"] or ""),
            policy_path=Path(values["CFO_POLICY_PATH"] or "") if values["CFO_POLICY_PATH"] else None,
            namespace=values["CFO_NAMESPACE"] or INSTALL_NAMESPACE,
            identity=values["CFO_IDENTITY"] or f"{socket.gethostname()}-{os.getpid()}",
            leader_election=not flag(values, "CFO_NO_LEADER_ELECTION"),
            workers=whole(values, "CFO_WORKERS", 1),
            metrics_port=whole(values, "CFO_METRICS_PORT", 0),
            metrics_bind=values["CFO_METRICS_BIND"] or "0.0.0.0",
            default_agent_port=whole(values, "CFO_AGENT_PORT", 1),
            batch_deadline_seconds=number(values, "CFO_BATCH_DEADLINE_SECONDS", 1),
            log_level=values["CFO_LOG_LEVEL"] or "info",
        )
