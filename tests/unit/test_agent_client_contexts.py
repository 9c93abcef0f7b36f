"""The controller's TLS context for agent calls is reused, and made again after a rotation."""

from __future__ import annotations

import os
import ssl

from customer_friendly.controller.agents import Contexts


def test_the_agent_client_context_is_made_again_only_when_its_files_change(tmp_path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("one")
    key.write_text("one")
    made: list[ssl.SSLContext] = []

    def make() -> ssl.SSLContext:
        made.append(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
        return made[-1]

    contexts = Contexts()
    assert contexts.get(cert, key, make) is contexts.get(cert, key, make)
    assert len(made) == 1
    cert.write_text("rotated")  # a new certificate (a new size and time)
    os.utime(cert, ns=(1, 1))
    assert contexts.get(cert, key, make) is made[-1] and len(made) == 2
