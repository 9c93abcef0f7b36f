"""What the controller reuses between agent calls: its TLS context (made again after a rotation)
and idle keep-alive connections (per agent identity, bounded)."""

from __future__ import annotations

import http.client
import os
import ssl

from customer_friendly.controller.agents import Connections, Contexts


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


def test_an_idle_connection_is_reused_only_for_the_same_agent_and_the_oldest_goes_first() -> None:
    pool = Connections(capacity=2)
    first, second, third = (http.client.HTTPSConnection("127.0.0.1", 1) for _ in range(3))
    pool.give(("10.0.0.1", 9443, "uid-a/c1"), first)
    assert pool.take(("10.0.0.1", 9443, "uid-b/c1")) is None  # another agent at the same address
    assert pool.take(("10.0.0.1", 9443, "uid-a/c1")) is first
    assert pool.take(("10.0.0.1", 9443, "uid-a/c1")) is None  # in use: out of the pool
    pool.give(("10.0.0.1", 9443, "a"), first)
    pool.give(("10.0.0.2", 9443, "b"), second)
    pool.give(("10.0.0.3", 9443, "c"), third)
    assert pool.take(("10.0.0.1", 9443, "a")) is None  # closed: idle longest beyond the capacity
    assert pool.take(("10.0.0.3", 9443, "c")) is third
