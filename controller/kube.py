"""The one module that talks to the Kubernetes API for the controller.

Only what the ClusterRole in manifests/base/controller-rbac.yaml grants: Deployments and
Pods (get, list, watch, patch), pods/status (patch: the in-place-ready condition of traffic:
drain), EndpointSlices (list), ConfigMaps (get, list, watch, create, patch), Events (create),
and a Lease in the controller's own namespace. Its writes return what the API answered, so
that controller/cache.py (which serves the reads the reconcile makes on every poll) holds them
before the watch brings them back.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter

from customer_friendly import contract as c
from customer_friendly.contract.readiness import ready_endpoint_pods

logger = logging.getLogger(__name__)

API_REQUESTS = Counter("cfo_controller_api_requests", "Requests the controller made to the Kubernetes API")


def _answer(response: Any) -> dict[str, Any] | None:
    """A write's answer as the dict the API sent (`_preload_content=False`: no model round trip)."""
    body = json.loads(response.data or b"null")
    return body if isinstance(body, dict) else None


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self._calls = 0

    def _count(self) -> None:
        self._calls += 1
        API_REQUESTS.inc()

    @property
    def calls(self) -> int:
        """API requests made, for the requests-per-pod figure."""
        return self._calls

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._count()
        try:
            obj = self.apps.read_namespaced_deployment(name, namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return self.apps.api_client.sanitize_for_serialization(obj)

    def deployments(self, namespace: str) -> list[dict[str, Any]]:
        self._count()
        items = self.apps.list_namespaced_deployment(namespace)
        return self.apps.api_client.sanitize_for_serialization(items).get("items", [])

    def pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """`label_selector` as contract.objects.pod_selector writes it."""
        self._count()
        pods = self.core.list_namespaced_pod(namespace, label_selector=label_selector)
        return self.core.api_client.sanitize_for_serialization(pods).get("items", [])

    def configmap_release(self, namespace: str, deployment: str) -> str | None:
        self._count()
        try:
            cm = self.core.read_namespaced_config_map(c.release_configmap_name(deployment), namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return (cm.data or {}).get(c.RELEASE_CONFIGMAP_KEY)

    def write_configmap(self, namespace: str, deployment: dict[str, Any], release: str,
                        source: str) -> dict[str, Any] | None:
        """The release ConfigMap, owned by the Deployment so that it goes when the Deployment goes;
        the API's answer (what controller/cache.py keeps)."""
        meta = deployment["metadata"]
        name = c.release_configmap_name(meta["name"])
        body = {
            "metadata": {
                "name": name, "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "customer-friendly-operator"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                     "uid": meta["uid"], "controller": True, "blockOwnerDeletion": False}],
            },
            "data": {c.RELEASE_CONFIGMAP_KEY: release, "source": source},
        }
        self._count()
        try:
            return _answer(self.core.patch_namespaced_config_map(name, namespace, body, _preload_content=False))
        except ApiException as err:
            if err.status != 404:
                raise
            self._count()
            return _answer(self.core.create_namespaced_config_map(namespace, body, _preload_content=False))

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._count()
        try:
            return self.batch.api_client.sanitize_for_serialization(self.batch.read_namespaced_job(name, namespace))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def create_job(self, body: dict[str, Any]) -> None:
        self._count()
        try:
            self.batch.create_namespaced_job(body["metadata"]["namespace"], body)
        except ApiException as err:
            if err.status != 409:  # created by a previous attempt: that one counts
                raise

    def job_log_tail(self, namespace: str, job_name: str, lines: int = 15) -> str | None:
        """The end of the migration's output, when a kubelet has it; None otherwise."""
        try:
            self._count()
            pods = self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}").items
            if not pods:
                return None
            self._count()
            return self.core.read_namespaced_pod_log(pods[0].metadata.name, namespace, tail_lines=lines) or None
        except ApiException:
            return None

    def annotate_deployment(self, namespace: str, name: str,
                            annotations: dict[str, str | None]) -> dict[str, Any] | None:
        """The Deployment as the API answered the patch."""
        self._count()
        body = {"metadata": {"annotations": annotations}}
        return _answer(self.apps.patch_namespaced_deployment(name, namespace, body, _preload_content=False))

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str | None]) -> dict[str, Any] | None:
        """The pod as the API answered the patch; None for a pod deleted meanwhile."""
        self._count()
        try:
            body = {"metadata": {"annotations": annotations}}
            return _answer(self.core.patch_namespaced_pod(name, namespace, body, _preload_content=False))
        except ApiException as err:
            if err.status != 404:  # a pod deleted meanwhile needs no annotation
                raise
            return None

    def ready_endpoint_pods(self, namespace: str) -> frozenset[str]:
        """Pods the namespace's EndpointSlices list as ready: traffic can still reach them."""
        self._count()
        slices = client.DiscoveryV1Api(self.core.api_client).list_namespaced_endpoint_slice(namespace)
        return ready_endpoint_pods(self.core.api_client.sanitize_for_serialization(slices).get("items", []))

    def set_pod_condition(self, namespace: str, name: str, condition: dict[str, str]) -> dict[str, Any] | None:
        """A strategic merge of one condition (merged by type) into the pod's status; the pod as
        the API answered, None for a pod deleted meanwhile."""
        self._count()
        try:
            body = {"status": {"conditions": [condition]}}
            return _answer(self.core.patch_namespaced_pod_status(name, namespace, body, _preload_content=False))
        except ApiException as err:
            if err.status != 404:  # a pod deleted meanwhile holds no traffic
                raise
            return None

    def event(self, deployment: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
        meta = deployment["metadata"]
        now = dt.datetime.now(dt.UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(api_version="apps/v1", kind="Deployment", name=meta["name"],
                                                     namespace=meta["namespace"], uid=meta["uid"]),
            reason=reason, message=message[:1024], type="Warning" if warning else "Normal",
            first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component="customer-friendly-controller"),
            reporting_component="customer-friendly.dev/controller", reporting_instance="controller",
        )
        self._count()
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except ApiException as err:  # events are best effort; the rollout annotation is the record
            logger.warning("could not record event %s on %s/%s: %s", reason, meta["namespace"], meta["name"],
                           err.reason)
