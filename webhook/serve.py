"""`cfo-webhook`: serve `webhook.app:create_app` with gunicorn over TLS.

gthread workers keep the API server's connections alive and reuse them. The TLS context is
rebuilt when the certificate or key file changes (cert rotation by `cfo-certs`, a Secret
update, or cert-manager), so rotation needs no restart.
"""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from customer_friendly.contract.config import add_arguments
from customer_friendly.webhook.config import SETTINGS, WebhookConfig

logger = logging.getLogger(__name__)


class ReloadingTLS:
    """An SSLContext per (cert, key) file version; gunicorn asks for one per connection."""

    def __init__(self, certfile: Path, keyfile: Path) -> None:
        self.certfile, self.keyfile = certfile, keyfile
        self._lock = threading.Lock()
        self._version: tuple[int, int, int, int] | None = None
        self._context: ssl.SSLContext | None = None

    def _file_version(self) -> tuple[int, int, int, int]:
        cert, key = self.certfile.stat(), self.keyfile.stat()
        return cert.st_mtime_ns, cert.st_ino, key.st_mtime_ns, key.st_ino

    def context(self) -> ssl.SSLContext:
        with self._lock:
            version = self._file_version()
            if version != self._version or self._context is None:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                try:
                    context.load_cert_chain(self.certfile, self.keyfile)
                except (ssl.SSLError, OSError) as err:
                    if self._context is None:
                        raise
                    # Mid-rotation (new cert, old key): keep serving the old pair until both agree.
                    logger.warning("certificate reload failed, keeping the current one: %s", err)
                    return self._context
                if self._context is not None:
                    logger.info("serving certificate reloaded from %s", self.certfile)
                self._context, self._version = context, version
            return self._context


class _Gunicorn(BaseApplication):
    def __init__(self, app_factory: Callable[[], Any], options: dict[str, Any]) -> None:
        self.app_factory = app_factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.app_factory()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cfo-webhook", description="Serve the mutating admission webhook over TLS.")
    add_arguments(parser, SETTINGS)
    return parser


def gunicorn_options(config: WebhookConfig, tls: ReloadingTLS) -> dict[str, Any]:
    return {
        "bind": config.bind,
        "worker_class": "gthread",
        "workers": config.workers,
        "threads": config.threads,
        # The API server reuses connections; keep them open longer than its idle timeout.
        "keepalive": 75,
        "timeout": 30,
        "graceful_timeout": 20,
        "certfile": str(config.cert),
        "keyfile": str(config.key),
        "ssl_context": lambda _conf, _default_factory: tls.context(),
        "accesslog": None,
        # Gunicorn 23+ opens a control socket under $HOME; the container's root FS is read-only.
        "control_socket_disable": True,
        "loglevel": config.log_level,
    }


def main(argv: list[str] | None = None) -> int:
    try:
        config = WebhookConfig.from_env(_parser().parse_args(argv))
    except ValueError as err:
        print(f"cfo-webhook: bad setting: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        stream=sys.stderr)
    for path in (config.cert, config.key):
        if not path.is_file():
            print(f"cfo-webhook: {path} not found (create it with `cfo-certs ensure`)", file=sys.stderr)
            return 2
    tls = ReloadingTLS(config.cert, config.key)
    tls.context()  # fail now, not at the first connection, if the pair is unusable

    from customer_friendly.webhook.app import create_app

    def factory() -> Any:
        return create_app(config)

    _Gunicorn(factory, gunicorn_options(config, tls)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
