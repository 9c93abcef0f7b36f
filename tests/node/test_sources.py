"""Release sources that need more than the code volume reach our containers through the
cluster policy (agentEnv, agentVolumes, agentVolumeMounts), on real pods: S3 with an endpoint
and credentials from a Secret (every other test), HTTPS behind a private CA, and a host
directory for `file://`."""

from __future__ import annotations

import pytest

from testbed.node_app import WebApp

pytestmark = pytest.mark.node


def released(app: WebApp, source: str) -> None:
    app.replicas = 1
    app.create(app.manifest("v1", source))
    pod = app.wait_ready()[0]
    assert app.links(pod)[0] == "releases/v1"
    result = app.cfo("release", "web", "v2", "--wait", "--timeout", "180")
    assert result.returncode == 0, result.stdout + result.stderr + app.controller_log()
    assert app.agent_status(app.pods()[0])["release"] == "v2"


def test_an_https_source_behind_a_private_ca_is_trusted_through_the_policys_ca_volume(app: WebApp) -> None:
    released(app, app.product.sources.https())


def test_a_file_source_reaches_our_containers_through_a_host_directory_the_policy_mounts(app: WebApp) -> None:
    product = app.product
    product.set_policy(**product.sources.policy(files=True))
    try:
        released(app, product.sources.file())
    finally:
        product.set_policy(**product.sources.policy())
