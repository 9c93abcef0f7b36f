"""`kubectl cfo`: drive in-place releases like `kubectl rollout`.

    kubectl cfo release DEPLOY ID [--wait]     set the release; --wait shows progress, exits 1 on failure
    kubectl cfo status DEPLOY                  pods and the releases they serve, and the rollout
    kubectl cfo history DEPLOY                 releases and outcomes, from Events
    kubectl cfo rollback DEPLOY [--wait]       release the previous release again
    kubectl cfo pause|resume DEPLOY            stop between batches / carry on
    kubectl cfo fleet                          every opted-in Deployment and what its pods run
    kubectl cfo publish DIR ID --source URI    pack DIR as release ID and upload it (s3:// or file://)
    kubectl cfo releases DEPLOY                what is published for its source, and which pods serve what
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from customer_friendly import contract as c
from customer_friendly.contract import groups
from customer_friendly.contract.artifact import ArtifactError, checksum_url, parse_checksum, release_of
from customer_friendly.contract.objects import annotations_of, is_opted_in, pod_selector
from customer_friendly.kubectl_cfo import view
from customer_friendly.kubectl_cfo.package import PackError
from customer_friendly.kubectl_cfo.publish import PUBLISHED, REPLACED, UNCHANGED, PublishError, publish
from customer_friendly.kubectl_cfo.stores import ArtifactStore, StoreError, store_for


class CommandError(RuntimeError):
    """Printed on stderr, exit code 1."""


def _parser() -> argparse.ArgumentParser:
    def add_common(target: argparse.ArgumentParser, defaults: bool) -> None:
        # kubectl takes its flags anywhere on the line; subcommands must not reset them.
        keep: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
        target.add_argument("-n", "--namespace", help="namespace (default: the context's)", **keep)
        target.add_argument("--context", help="kubeconfig context", **keep)
        target.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG or ~/.kube/config)", **keep)
        target.add_argument("-o", "--output", choices=("table", "json", "yaml"), help="output format",
                            **({"default": "table"} if defaults else keep))

    parser = argparse.ArgumentParser(prog="kubectl cfo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    add_common(common, defaults=False)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, parents=[common])

    release = command("release", "set the release of a Deployment (DEPLOY ID), or of an app group (--app NAME ID)")
    release.add_argument("targets", nargs="+", metavar="DEPLOY ID | ID")
    release.add_argument("--app", help="release every Deployment of this app group (customer-friendly.dev/app)")
    rollback = command("rollback", "release the previous release again")
    rollback.add_argument("deployment")
    for waiting in (release, rollback):
        waiting.add_argument("--wait", action="store_true", help="show progress until Complete, Failed or RolledBack")
        waiting.add_argument("--timeout", type=float, default=1800, help="seconds to wait (default 1800)")
    status = command("status", "pods and their releases, and the rollout (or an app group's Deployments)")
    status.add_argument("deployment", nargs="?")
    status.add_argument("--app", help="show every Deployment of this app group")
    for name, text in (("history", "releases and their outcomes"),
                       ("pause", "pause the rollout between batches"), ("resume", "resume a paused rollout")):
        command(name, text).add_argument("deployment")
    command("fleet", "every opted-in Deployment and the releases its pods run")
    publish = command("publish", "pack DIR as release ID and publish it with its .sha256 to --source")
    publish.add_argument("directory", metavar="DIR")
    publish.add_argument("release", metavar="ID")
    publish.add_argument("--source", required=True,
                         help="the Deployments' source template, such as s3://bucket/web/{release}.tar.gz")
    publish.add_argument("--force", action="store_true", help="replace a published release whose bytes differ")
    releases = command("releases", "releases published for a Deployment's source, and the pods serving each")
    releases.add_argument("deployment")
    releases.add_argument("--limit", type=int, default=20, help="newest releases shown (default 20; 0: all)")
    return parser


class Session:
    def __init__(self, args: argparse.Namespace) -> None:
        try:
            api = config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
            api.user_agent = f"{c.PLUGIN_FIELD_MANAGER}/0.1.0"  # the field manager of the release it sets
            contexts, active = config.list_kube_config_contexts(config_file=args.kubeconfig)
            current = next((ctx for ctx in contexts if ctx["name"] == args.context), None) if args.context else active
        except (config.ConfigException, OSError, TypeError) as err:
            raise CommandError(f"cannot load kubeconfig: {err}") from err
        self.namespace = args.namespace or (current or {}).get("context", {}).get("namespace") or "default"
        self.apps, self.core = client.AppsV1Api(api), client.CoreV1Api(api)
        self.serialize = api.sanitize_for_serialization

    def deployment(self, name: str) -> dict[str, Any]:
        try:
            deployment = self.serialize(self.apps.read_namespaced_deployment(name, self.namespace))
        except ApiException as err:
            if err.status == 404:
                raise CommandError(f'deployment "{name}" not found in namespace "{self.namespace}"') from err
            raise CommandError(f"cannot read deployment {name}: {err.reason}") from err
        if not is_opted_in(deployment):
            raise CommandError(f'deployment "{name}" is not opted in (annotation {c.ENABLED}: "true")')
        return deployment

    def pods(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        namespace = deployment["metadata"]["namespace"]
        pods = self.core.list_namespaced_pod(namespace, label_selector=pod_selector(deployment))
        return self.serialize(pods).get("items", [])

    def annotate(self, name: str, values: dict[str, str]) -> None:
        try:
            self.apps.patch_namespaced_deployment(name, self.namespace, {"metadata": {"annotations": values}})
        except ApiException as err:
            body = err.body if isinstance(err.body, str) else ""
            message = json.loads(body).get("message", err.reason) if body.startswith("{") else err.reason
            raise CommandError(f"cannot update deployment {name}: {message}") from err


def emit(args: argparse.Namespace, document: Any, text: str) -> None:
    if args.output == "json":
        print(json.dumps(document, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(document, sort_keys=False), end="")
    else:
        print(text)


def wait(session: Session, names: list[str], release: str, timeout: float, app: str | None = None) -> int:
    """Show progress on stderr until every rollout of `release` among `names` ends: 0 when all are
    Complete, 1 when any failed or rolled back, 2 on timeout. One Deployment gets a progress bar."""
    started, last = time.monotonic(), ""
    tty = sys.stderr.isatty()
    while time.monotonic() - started < timeout:
        rollouts = {name: view.rollout_of(session.deployment(name)) for name in names}
        mine = {name: r for name, r in rollouts.items() if r is not None and r.release == release}
        if len(names) == 1 and mine:
            line = view.progress_line(mine[names[0]], time.monotonic() - started)
            if line.rsplit("  ", 1)[0] != last.rsplit("  ", 1)[0] or tty:
                print(f"\r{line}" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
                last = line
        if mine and all(r.settled for r in mine.values()):
            failed = {name: r for name, r in mine.items() if not r.succeeded}
            if tty and len(names) == 1:
                print(file=sys.stderr)
            if len(names) == 1:
                only = mine[names[0]]
                print(f"{only.phase}: {only.message}", file=sys.stderr)
                return 1 if failed else 0
            if failed:
                for name, rollout in mine.items():
                    print(f"{name}: {rollout.phase}: {rollout.message}", file=sys.stderr)
                return 1
            if len(mine) == len(names):
                print(f"Complete: app {app} serves {release}", file=sys.stderr)
                return 0
        time.sleep(0.5)
    print(f"\ntimed out after {timeout:.0f}s waiting for release {release}", file=sys.stderr)
    return 2


def fleet(args: argparse.Namespace, session: Session) -> int:
    apps = client.AppsV1Api(session.apps.api_client)
    deployments = [d for d in session.serialize(apps.list_deployment_for_all_namespaces()).get("items", [])
                   if is_opted_in(d)]
    pods = {(d["metadata"]["namespace"], d["metadata"]["name"]): session.pods(d) for d in deployments}
    rows = view.fleet_rows(deployments, pods)
    emit(args, rows, view.table(rows, [("NAMESPACE", "namespace"), ("DEPLOYMENT", "deployment"),
                                       ("WANTED", "wanted"), ("PHASE", "phase"), ("PODS", "pods"),
                                       ("RUNNING", "running")]))
    return 0


def status(args: argparse.Namespace, session: Session, deployment: dict[str, Any]) -> int:
    document = view.status_document(deployment, session.pods(deployment))
    rollout = document["rollout"]  # the annotation's JSON form, as -o json shows it
    summary = (f"release {document['wanted']}: {rollout.get('phase', 'no rollout yet')} "
               f"({rollout.get('updated', 0)}/{rollout.get('total', 0)} pods) {rollout.get('message', '')}")
    columns = [("POD", "pod"), ("IP", "ip"), ("PHASE", "phase"), ("READY", "ready"), ("RELEASE", "release")]
    if any(row["traffic"] for row in document["pods"]):  # traffic: drain only
        columns.append(("TRAFFIC", "traffic"))
    emit(args, document, view.table(document["pods"], columns) + "\n\n" + summary.rstrip())
    return 0


def history(args: argparse.Namespace, session: Session, deployment: dict[str, Any]) -> int:
    name = deployment["metadata"]["name"]
    events = session.serialize(session.core.list_namespaced_event(
        session.namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=Deployment"))
    rows = view.history_rows(deployment, events.get("items", []))
    emit(args, rows, view.table(rows, [("TIME", "time"), ("TYPE", "type"), ("REASON", "reason"),
                                       ("MESSAGE", "message")]))
    return 0


def pause_or_resume(args: argparse.Namespace, session: Session, deployment: dict[str, Any]) -> int:
    name = deployment["metadata"]["name"]
    session.annotate(name, {c.PAUSED: "true" if args.command == "pause" else "false"})
    print(f"deployment.apps/{name} {'paused' if args.command == 'pause' else 'resumed'}")
    return 0


def release(args: argparse.Namespace, session: Session, deployment: dict[str, Any]) -> int:
    """release ID, or rollback (the rollout record's previous release), then --wait."""
    name = deployment["metadata"]["name"]
    if args.command == "rollback":
        rollout = view.rollout_of(deployment)
        target = rollout.previous if rollout else None
        if not target:
            raise CommandError(f"deployment {name} has no previous release to roll back to")
    else:
        target = args.release
        if not c.is_release_id(target):
            raise CommandError(f"invalid release id {target!r}: it must match {c.RELEASE_ID_PATTERN}")
    session.annotate(name, {c.RELEASE: target})
    print(f"deployment.apps/{name} release {target}")
    return wait(session, [name], target, args.timeout) if args.wait else 0


def publish_release(args: argparse.Namespace) -> int:
    """publish: no cluster needed, so a CI job without a kubeconfig can publish."""
    tty = sys.stderr.isatty()

    def progress(sent: int, total: int) -> None:
        if tty:
            print(f"\r{view.upload_bar(sent, total)}", end="" if sent < total else "\n", file=sys.stderr, flush=True)

    def say(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        published = publish(Path(args.directory), args.release, args.source, force=args.force, progress=progress,
                            say=say)
    except (PublishError, PackError, StoreError) as err:
        raise CommandError(str(err)) from err
    document = dataclasses.asdict(published)
    lines = {PUBLISHED: f"published {published.url} (sha256 {published.sha256})",
             UNCHANGED: f"unchanged: {published.url} already holds these bytes (sha256 {published.sha256})",
             REPLACED: f"replaced {published.url}: sha256 {published.previous_sha256} -> {published.sha256}"}
    emit(args, document, lines[published.outcome])
    return 0


def releases(args: argparse.Namespace, session: Session, deployment: dict[str, Any]) -> int:
    source = annotations_of(deployment).get(c.SOURCE, "")
    prefix = source.split(c.RELEASE_PLACEHOLDER, 1)[0]
    try:
        store = store_for(prefix)
        found = [(rel, obj) for obj in store.list(prefix) if (rel := release_of(source, obj.url))]
        found.sort(key=lambda item: item[1].modified)
        shown = found[-args.limit:] if args.limit > 0 else found
        published = [(rel, obj.size, obj.modified, _checksum(store, obj.url)) for rel, obj in shown]
    except StoreError as err:
        raise CommandError(str(err)) from err
    rollout = view.rollout_of(deployment)
    rows = view.release_rows(published, annotations_of(deployment).get(c.RELEASE),
                             rollout.previous if rollout else None, session.pods(deployment))
    hidden = len(found) - len(shown)
    emit(args, rows, view.table(rows, [("RELEASE", "release"), ("PUBLISHED", "published"), ("SIZE", "size"),
                                       ("SHA256", "sha256"), ("PODS", "pods"), ("SERVING", "serving"),
                                       ("NOTE", "note")])
         + (f"\n({hidden} older releases not shown: --limit 0 shows all)" if hidden else ""))
    return 0


def _checksum(store: ArtifactStore, url: str) -> str | None:
    text = store.read_text(checksum_url(url))
    try:
        return parse_checksum(text) if text is not None else None
    except ArtifactError:
        return "(damaged)"


ON_A_DEPLOYMENT = {"status": status, "history": history, "pause": pause_or_resume, "resume": pause_or_resume,
                   "release": release, "rollback": release, "releases": releases}


def run(args: argparse.Namespace) -> int:
    if args.command == "publish":
        return publish_release(args)
    session = Session(args)
    if args.command == "fleet":
        return fleet(args, session)
    if getattr(args, "app", None):
        return run_app(args, session)
    if args.command == "release":
        if len(args.targets) != 2:
            raise CommandError("usage: kubectl cfo release DEPLOY ID, or kubectl cfo release --app NAME ID")
        args.deployment, args.release = args.targets
    if not args.deployment:
        raise CommandError(f"kubectl cfo {args.command}: name a Deployment (or --app NAME)")
    return ON_A_DEPLOYMENT[args.command](args, session, session.deployment(args.deployment))


def app_members(session: Session, app: str) -> list[dict[str, Any]]:
    items = session.serialize(session.apps.list_namespaced_deployment(session.namespace)).get("items", [])
    group = groups.members(items, app)
    if not group:
        raise CommandError(f'no opted-in Deployment of app "{app}" in namespace "{session.namespace}"')
    return group


def run_app(args: argparse.Namespace, session: Session) -> int:
    """release --app / status --app: the group as a whole, in its order (web, worker, cron)."""
    members = app_members(session, args.app)
    if args.command == "status":
        rows = view.group_rows(members, {(d["metadata"]["namespace"], d["metadata"]["name"]): session.pods(d)
                                         for d in members})
        emit(args, rows, view.table(rows, [("DEPLOYMENT", "deployment"), ("ROLE", "role"), ("WANTED", "wanted"),
                                           ("PHASE", "phase"), ("PODS", "pods"), ("RUNNING", "running")]))
        return 0
    if args.command != "release" or len(args.targets) != 1:
        raise CommandError("usage: kubectl cfo release --app NAME ID")
    release = args.targets[0]
    if not c.is_release_id(release):
        raise CommandError(f"invalid release id {release!r}: it must match {c.RELEASE_ID_PATTERN}")
    for deployment in members:
        session.annotate(deployment["metadata"]["name"], {c.RELEASE: release})
        print(f"deployment.apps/{deployment['metadata']['name']} release {release}")
    if not args.wait:
        return 0
    return wait(session, [d["metadata"]["name"] for d in members], release, args.timeout, app=args.app)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except CommandError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
