"""Informer-style caches: Deployments, their pods and the release ConfigMaps, listed once and then
watched, so that a reconcile reads memory instead of making a few GETs on every poll.

- Each kind is listed, then watched from the list's resourceVersion (with bookmarks); a watch
  that ends resumes from the last version it saw, and only 410 Gone (or an error on resuming)
  lists again. A relist replaces the store and reports what changed.
- Writes still go to the API (controller/kube.py). Their answer goes into the store at once,
  so the next reconcile sees the rollout record it just wrote; the watch bringing the same
  write back later is not news, and an older event never replaces a newer object
  (index.keep: resource versions compare since Kubernetes 1.35).
- What is news wakes a Deployment: a change of it (not of its status alone), of a pod it
  selects, of its release ConfigMap; and a change of one member of an app group wakes the
  others (they gate on each other).
- Only pods some opted-in Deployment selects are kept, trimmed (index.slim_pod). A Deployment
  that opts in later gets its pods listed once.

Objects handed out are the stores' own and must not be changed: a store replaces an object
whole, never edits one, so readers need no copy.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from customer_friendly import contract as c
from customer_friendly.contract.objects import Obj, is_opted_in, label_selector
from customer_friendly.controller import index
from customer_friendly.controller.index import Key, key_of
from customer_friendly.controller.kube import API_REQUESTS, Kube

logger = logging.getLogger(__name__)

Change = tuple[Obj | None, Obj | None]
"""(before, after); None before for a new object, None after for a deleted one."""

LIST_PAGE = 500
"""Objects per page of a list."""

GONE_REMEMBERED = 10_000
"""Deleted keys remembered with their last version, so that a late copy (a pod list answered just
before the deletion) does not bring a deleted object back."""


@dataclass
class _Write:
    """Writes of one object in flight, what it was before them, and what the watch brought meanwhile."""

    before: Obj | None
    count: int = 1
    held: list[Change] = field(default_factory=list)


class Store:
    """Objects of one kind by (namespace, name), the newest version winning; thread-safe.
    Indexed by namespace and by label, for selector reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[Key, Obj] = {}
        self._by_namespace: dict[str, set[Key]] = {}
        self._by_label: dict[tuple[str, str, str], set[Key]] = {}
        self._gone: OrderedDict[Key, str] = OrderedDict()
        self._writes: dict[Key, _Write] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Key) -> Obj | None:
        return self._items.get(key)

    def all(self) -> list[Obj]:
        with self._lock:
            return list(self._items.values())

    def in_namespace(self, namespace: str) -> list[Obj]:
        with self._lock:
            return [self._items[k] for k in self._by_namespace.get(namespace, ())]

    def select(self, namespace: str, labels: dict[str, str]) -> list[Obj]:
        """Objects of `namespace` whose labels include all of `labels`, by name."""
        with self._lock:
            if labels:
                first = min(labels.items())
                keys: Iterable[Key] = self._by_label.get((namespace, *first), ())
            else:
                keys = self._by_namespace.get(namespace, ())
            found = [self._items[k] for k in keys if index.matches(labels, index.labels_of(self._items[k]))]
        return sorted(found, key=lambda o: key_of(o)[1])

    def put(self, obj: Obj, watched: bool = True) -> Change | None:
        """Keep `obj` unless the store holds a newer version (or saw it deleted later); the change
        when its version is new, None when it is not news. A `watched` change to an object the
        controller is writing right now is held until the write ends (`end_write`)."""
        key = key_of(obj)
        with self._lock:
            gone = self._gone.get(key)
            if gone is not None and index.newer(index.version_of(obj), gone) is not True:
                return None
            old = self._items.get(key)
            if not index.keep(old, obj):
                return None
            self._unindex(key, old)
            self._items[key] = obj
            self._index(key, obj)
            if old is not None and index.version_of(old) == index.version_of(obj):
                return None
            return self._held((old, obj), key, watched)

    def remove(self, obj: Obj, deleted: bool = True, watched: bool = True) -> Change | None:
        """Forget the object (deleted at `obj`'s version, or no longer wanted when not `deleted`);
        the change, or None when it was not kept (or is held, as `put` says)."""
        key = key_of(obj)
        with self._lock:
            version = index.version_of(obj)
            if deleted and version:
                self._gone[key] = version
                self._gone.move_to_end(key)
                while len(self._gone) > GONE_REMEMBERED:
                    self._gone.popitem(last=False)
            old = self._items.pop(key, None)
            self._unindex(key, old)
            return None if old is None else self._held((old, None), key, watched)

    def _held(self, change: Change, key: Key, watched: bool) -> Change | None:
        write = self._writes.get(key) if watched else None
        if write is None:
            return change
        write.held.append(change)
        return None

    def begin_write(self, key: Key) -> None:
        """The controller is about to write `key`: the watch may bring the write back before the
        API's answer arrives, and that echo must not pass for news."""
        with self._lock:
            write = self._writes.get(key)
            if write is None:
                self._writes[key] = _Write(self._items.get(key))
            else:
                write.count += 1

    def end_write(self, key: Key, written: Obj | None) -> tuple[list[Change], Change | None]:
        """The write ended with `written` (the API's answer, None when it failed): keeps it, and
        returns what the watch brought meanwhile that was not its echo, and the write's own
        change from before it began (None when it changed nothing)."""
        if written is not None:
            self.put(written, watched=False)
        with self._lock:
            write = self._writes[key]
            write.count -= 1
            if write.count:
                return [], None
            del self._writes[key]
        version = index.version_of(written) if written is not None else None
        news = [change for change in write.held if change[1] is None or index.version_of(change[1]) != version]
        before = write.before
        own = None if written is None or (before is not None and index.version_of(before) == version) \
            else (before, self.get(key) or written)
        return news, own

    def replace(self, objs: Iterable[Obj], version: str) -> list[Change]:
        """A relist at `version`: what it returned replaces what is held, except objects written
        since (newer than the list); the changes, for the handlers."""
        listed = {key_of(o): o for o in objs}
        changes = []
        with self._lock:
            held = dict(self._items)
        for key, old in held.items():
            if key not in listed and index.newer(index.version_of(old), version) is not True:
                change = self.remove(old, deleted=False)
                if change:
                    changes.append(change)
        for obj in listed.values():
            change = self.put(obj)
            if change:
                changes.append(change)
        return changes

    def _index(self, key: Key, obj: Obj) -> None:
        self._by_namespace.setdefault(key[0], set()).add(key)
        for label in index.labels_of(obj).items():
            self._by_label.setdefault((key[0], *label), set()).add(key)

    def _unindex(self, key: Key, obj: Obj | None) -> None:
        if obj is None:
            return
        self._by_namespace.get(key[0], set()).discard(key)
        for label in index.labels_of(obj).items():
            keys = self._by_label.get((key[0], *label))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_label[(key[0], *label)]


def _count() -> None:
    API_REQUESTS.inc()


class Informer:
    """List, then watch, one kind into a Store; hands every change that is news to `on_change`."""

    def __init__(self, name: str, list_call: Callable[..., Any], store: Store, on_change: Callable[[Change], None],
                 slim: Callable[[Obj], Obj], accept: Callable[[Obj], bool] = lambda _: True,
                 label_selector: str | None = None, watch_seconds: int = 300) -> None:
        self.name, self.list_call, self.store, self.on_change = name, list_call, store, on_change
        self.slim, self.accept, self.label_selector, self.watch_seconds = slim, accept, label_selector, watch_seconds
        self.synced = threading.Event()
        self.lists = 0
        """Lists made (the first and every relist), for tests and the log."""

    def _selector(self) -> dict[str, Any]:
        return {"label_selector": self.label_selector} if self.label_selector else {}

    def list(self) -> str:
        """List (in pages, so that thousands of pods are never one answer in memory) and replace
        the store; the list's resourceVersion."""
        kept: list[Obj] = []
        version, page = "", ""
        while True:
            _count()
            response = self.list_call(_preload_content=False, limit=LIST_PAGE, **self._selector(),
                                      **({"_continue": page} if page else {}))
            body = json.loads(response.data)
            meta = body.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")
            kept += [self.slim(o) for o in body.get("items") or [] if self.accept(o)]
            page = str(meta.get("continue") or "")
            if not page:
                break
        for change in self.store.replace(kept, version):
            self.on_change(change)
        self.lists += 1
        self.synced.set()
        logger.info("%s: listed %d at version %s", self.name, len(kept), version)
        return version

    def watch(self, version: str, stop: threading.Event) -> str:
        """Watch from `version` until the stream ends or `stop` is set; the last version seen.
        ApiException 410 when `version` is too old."""
        _count()
        response = self.list_call(watch=True, resource_version=version, allow_watch_bookmarks=True,
                                  timeout_seconds=self.watch_seconds, _preload_content=False,
                                  _request_timeout=(10, self.watch_seconds + 60), **self._selector())
        try:
            for line in iter_resp_lines(response):
                if stop.is_set():
                    break
                version = self._event(json.loads(line)) or version
        finally:
            response.close()
            response.release_conn()
        return version

    def _event(self, event: dict[str, Any]) -> str | None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            raise ApiException(status=obj.get("code"), reason=f"{obj.get('reason')}: {obj.get('message')}")
        if kind != "BOOKMARK":
            if kind == "DELETED":
                change = self.store.remove(obj)
            elif self.accept(obj):
                change = self.store.put(self.slim(obj))
            else:
                change = self.store.remove(obj, deleted=False)
            if change is not None:
                self.on_change(change)
        return index.version_of(obj) or None

    def run(self, stop: threading.Event, max_iterations: int | None = None, version: str | None = None) -> None:
        """List, then watch from where the last watch ended; relist on 410 Gone. An error (a
        dropped connection, an API server restart) waits a second and resumes the watch, which
        relists if its version has expired meanwhile. `version` resumes from a version already
        held; `max_iterations` is for tests."""
        iterations = 0
        while not stop.is_set() and (max_iterations is None or iterations < max_iterations):
            iterations += 1
            try:
                version = self.watch(version, stop) if version else self.list()
            except ApiException as err:
                if err.status == 410:
                    logger.info("%s: watch expired (410 Gone); listing again", self.name)
                    version = None
                else:
                    logger.warning("%s: watch failed (%s); again in 1s", self.name, err.reason)
                    stop.wait(1)
            except Exception as err:  # a dropped connection, an API server restart
                logger.warning("%s: watch interrupted (%s); again in 1s", self.name, err)
                stop.wait(1)


class ClusterCache:
    """The three informers and what their changes wake. `enqueue` is the work queue's."""

    def __init__(self, api_client: client.ApiClient, watch_seconds: int = 300) -> None:
        apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
        self.core = core
        self.enqueue: Callable[[Key], None] = lambda _: None
        self.deployments, self.pods, self.configmaps = Store(), Store(), Store()
        self.deployment_informer = Informer("deployments", apps.list_deployment_for_all_namespaces,
                                            self.deployments, self._deployment_changed, index.slim_deployment,
                                            watch_seconds=watch_seconds)
        self.pod_informer = Informer("pods", core.list_pod_for_all_namespaces, self.pods, self._pod_changed,
                                     index.slim_pod, accept=self._selected, watch_seconds=watch_seconds)
        self.configmap_informer = Informer("configmaps", core.list_config_map_for_all_namespaces, self.configmaps,
                                           self._configmap_changed, lambda o: o,
                                           label_selector="=".join(index.MANAGED_LABEL), watch_seconds=watch_seconds)
        self.informers = (self.deployment_informer, self.pod_informer, self.configmap_informer)

    def synced(self, timeout: float | None = None) -> bool:
        return all(informer.synced.wait(timeout) for informer in self.informers)

    def run(self, enqueue: Callable[[Key], None], stop: threading.Event) -> None:
        """Start the informers (Deployments first: the pod informer keeps only what they select)
        and return once all have listed, or `stop` is set."""
        self.enqueue = enqueue
        threads = [threading.Thread(target=informer.run, args=(stop,), name=f"watch-{informer.name}", daemon=True)
                   for informer in self.informers]
        threads[0].start()
        while not stop.is_set() and not self.deployment_informer.synced.wait(0.5):
            pass
        for thread in threads[1:]:
            thread.start()
        while not stop.is_set() and not self.synced(0.5):
            pass

    # --- what wakes what ----------------------------------------------------------------------

    def routes(self, pod: Obj) -> list[Key]:
        """The opted-in Deployments that select `pod` (its ReplicaSet's Deployment, looked up by name;
        the namespace's opted-in ones scanned only when that is not it)."""
        namespace = key_of(pod)[0]
        candidate = index.owner_candidate(pod)
        owner = self.deployments.get((namespace, candidate)) if candidate else None
        return index.deployments_of_pod(pod, owner, lambda: self.deployments.in_namespace(namespace))

    def _selected(self, pod: Obj) -> bool:
        return bool(self.routes(pod))

    def _deployment_changed(self, change: Change, written: bool = False) -> None:
        old, new = change
        key = key_of(new or old or {})
        if not written and index.deployment_news(old, new) and is_opted_in(new or old or {}):
            self.enqueue(key)
        app = index.annotations_of(new or old or {}).get(c.APP)
        if app and index.group_news(old, new):
            for peer in self.deployments.in_namespace(key[0]):
                if key_of(peer) != key and index.annotations_of(peer).get(c.APP) == app and is_opted_in(peer):
                    self.enqueue(key_of(peer))
        if new is not None and is_opted_in(new) and not (old is not None and is_opted_in(old)) \
                and self.deployment_informer.synced.is_set():
            self._fill_pods(new)

    def _fill_pods(self, deployment: Obj) -> None:
        """A Deployment that opts in after the pods were listed: its pods were not kept until now."""
        wanted = index.selector_labels(deployment)
        if wanted is None:
            return
        _count()
        namespace = key_of(deployment)[0]
        try:
            response = self.core.list_namespaced_pod(namespace, label_selector=label_selector(wanted),
                                                     _preload_content=False)
        except ApiException as err:  # its pods come as they change; the watch must go on meanwhile
            logger.warning("%s/%s: could not list its pods (%s)", namespace, key_of(deployment)[1], err.reason)
            return
        for pod in json.loads(response.data).get("items") or []:
            self.pods.put(index.slim_pod(pod))

    def _pod_changed(self, change: Change) -> None:
        for key in self.routes(change[1] or change[0] or {}):
            self.enqueue(key)

    def _configmap_changed(self, change: Change) -> None:
        owner = index.configmap_owner(change[1] or change[0] or {})
        deployment = self.deployments.get(owner) if owner else None
        if owner is not None and deployment is not None and is_opted_in(deployment):
            self.enqueue(owner)

    # --- writes -------------------------------------------------------------------------------

    def write(self, store: Store, key: Key, call: Callable[[], Obj | None], slim: Callable[[Obj], Obj],
              on_change: Callable[[Change], None], on_written: Callable[[Change], None] | None = None
              ) -> Obj | None:
        """Make a write through `call` and keep its answer; what the watch brought meanwhile that
        was not the write's own echo is news as usual, and the write's own change goes to
        `on_written` (the reconcile that wrote it looks again by itself)."""
        store.begin_write(key)
        written = None
        try:
            written = call()
        finally:
            news, own = store.end_write(key, slim(written) if written is not None else None)
            for change in news:
                on_change(change)
            if own is not None and on_written is not None:
                on_written(own)
        return written

    def _deployment_written(self, change: Change) -> None:
        """Its reconcile returns its own requeue; the other members of its app group gate on its record."""
        self._deployment_changed(change, written=True)


class CachedKube(Kube):
    """Kube whose reads of Deployments, pods and release ConfigMaps come from the caches, and whose
    writes to them update the caches with the API's answer. Everything else is Kube's."""

    SYNC_SECONDS = 60.0

    def __init__(self, api_client: client.ApiClient, cache: ClusterCache) -> None:
        super().__init__(api_client)
        self.cache = cache

    def _wait(self) -> None:
        """Until the first lists are in, the caches would say "no pods": never plan from that."""
        if not self.cache.synced(self.SYNC_SECONDS):
            raise RuntimeError("the caches have not listed Deployments, pods and ConfigMaps yet")

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._wait()
        return self.cache.deployments.get((namespace, name))

    def deployments(self, namespace: str) -> list[dict[str, Any]]:
        self._wait()
        return self.cache.deployments.in_namespace(namespace)

    def pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        labels = index.parse_selector(label_selector)
        if not labels:  # set-based or empty: not what the cache is indexed for
            return super().pods(namespace, label_selector)
        self._wait()
        return self.cache.pods.select(namespace, labels)

    def configmap_release(self, namespace: str, deployment: str) -> str | None:
        self._wait()
        found = self.cache.configmaps.get((namespace, c.release_configmap_name(deployment)))
        return None if found is None else (found.get("data") or {}).get(c.RELEASE_CONFIGMAP_KEY)

    def write_configmap(self, namespace: str, deployment: dict[str, Any], release: str, source: str) -> Obj | None:
        cache = self.cache
        key = (namespace, c.release_configmap_name(deployment["metadata"]["name"]))
        return cache.write(cache.configmaps, key, lambda: super(CachedKube, self).write_configmap(
            namespace, deployment, release, source), lambda o: o, cache._configmap_changed)

    def annotate_deployment(self, namespace: str, name: str, annotations: dict[str, str | None]) -> Obj | None:
        cache = self.cache
        return cache.write(cache.deployments, (namespace, name), lambda: super(CachedKube, self).annotate_deployment(
            namespace, name, annotations), index.slim_deployment, cache._deployment_changed, cache._deployment_written)

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str | None]) -> Obj | None:
        cache = self.cache
        return cache.write(cache.pods, (namespace, name), lambda: super(CachedKube, self).annotate_pod(
            namespace, name, annotations), index.slim_pod, cache._pod_changed)

    def set_pod_condition(self, namespace: str, name: str, condition: dict[str, str]) -> Obj | None:
        """traffic: drain's gate: held at once, so the next poll does not close or open it twice."""
        cache = self.cache
        return cache.write(cache.pods, (namespace, name), lambda: super(CachedKube, self).set_pod_condition(
            namespace, name, condition), index.slim_pod, cache._pod_changed)
