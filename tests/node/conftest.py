"""Session fixtures for the real node: the cluster, our images installed by `cfo-admin install`,
and release sources the pods reach. Nothing skips: a missing package or binary is installed or
built, or the session fails saying what is missing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.node import Node, running_node
from testbed.node_app import Product, Sources, WebApp, node_release

pytestmark = pytest.mark.node

RELEASES = ("v1", "v2", "v3", "v4")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The chart's test (fixture `helm_release`) installs what cfo-admin's install (the session's
    `product`) also names: it runs before every other real-node test, which it leaves a clean
    node. Only the real-node tests move; the rest of the session keeps its order."""
    here = Path(__file__).parent
    chart = [item for item in items if "helm_release" in getattr(item, "fixturenames", ())]
    if not chart:
        return
    rest = [item for item in items if item not in chart]
    first = next((i for i, item in enumerate(rest) if item.path.parent == here), len(rest))
    items[:] = rest[:first] + chart + rest[first:]


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    # Only one real node runs on a machine; a test session waits its turn rather than failing.
    os.environ.setdefault("CFO_NODE_WAIT", "1800")
    with running_node(tmp_path_factory.mktemp("node")) as started:
        print(f"\nreal node: built/checked in {started.timings['build']:.0f}s, images imported in "
              f"{started.timings['import']:.0f}s, started in {started.timings['start']:.0f}s")
        yield started


@pytest.fixture(scope="session")
def sources(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sources]:
    started = Sources(tmp_path_factory.mktemp("sources")).start()
    for proc in started.processes():
        node.adopt(proc)
    for release in RELEASES:
        started.publish(release, node_release(release))
    started.publish("broken", node_release("broken", broken=True))
    yield started
    started.stop()


@pytest.fixture(scope="session")
def product(node: Node, sources: Sources, tmp_path_factory: pytest.TempPathFactory) -> Product:
    return Product(node, sources, tmp_path_factory.mktemp("product")).install()


@pytest.fixture
def app(node: Node, product: Product) -> Iterator[WebApp]:
    web = WebApp(node, product, f"n-{uuid.uuid4().hex[:6]}")
    yield web
    node.kubectl("delete", "namespace", web.namespace, "--wait=false", check=False)
