"""`cfo-admin`: install, upgrade, uninstall and preflight, against the current kubectl context.

    cfo-admin preflight     what the cluster (and AWS, with credentials) must have
    cfo-admin install       certificates, RBAC, webhook, controller, policy, webhook configuration
    cfo-admin upgrade       the same, keeping the certificates and the edited policy
    cfo-admin uninstall     everything above; opted-in Deployments are left as they are
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from customer_friendly.admin import preflight
from customer_friendly.admin.install import Installer, policy_values
from customer_friendly.contract.objects import is_opted_in
from customer_friendly.contract.policy import (
    INSTALL_NAMESPACE,
    POLICY_CONFIGMAP,
    Policy,
    PolicyError,
    policy_from_mapping,
)


class KubectlError(RuntimeError):
    pass


def kubectl_runner(binary: str, base: list[str]) -> Any:
    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([binary, *base, *args], input=input, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args[:3])}: {result.stderr.strip()}")
        return result
    return run


def _policy(core: Any) -> Policy:
    from kubernetes.client.exceptions import ApiException

    try:
        data = core.read_namespaced_config_map(POLICY_CONFIGMAP, INSTALL_NAMESPACE).data or {}
    except ApiException as err:
        if err.status == 404:
            return Policy()
        raise
    return policy_from_mapping(data)


def run_preflight(api: Any, access_point_limit: int) -> int:
    from kubernetes import client

    core, storage, apps = client.CoreV1Api(api), client.StorageV1Api(api), client.AppsV1Api(api)
    try:
        policy = _policy(core)
        checks = [preflight.Check("policy", True, "valid")]
    except PolicyError as err:
        policy, checks = Policy(), [preflight.Check("policy", False, str(err), "fix the policy ConfigMap")]
    version = client.VersionApi(api).get_code().git_version
    checks += preflight.version_checks(version, policy)
    classes = api.sanitize_for_serialization(storage.list_storage_class()).get("items", [])
    checks += preflight.storage_class_checks(policy, classes)
    deployments = [d for d in api.sanitize_for_serialization(apps.list_deployment_for_all_namespaces())["items"]
                   if is_opted_in(d)]
    checks += aws_checks(policy, classes, deployments, access_point_limit)
    print(preflight.render(checks))
    return 0 if all(c.ok for c in checks) else 1


def aws_checks(policy: Policy, classes: list[dict[str, Any]], deployments: list[dict[str, Any]],
               access_point_limit: int) -> list[preflight.Check]:
    try:
        import boto3
        import botocore.exceptions

        session = boto3.session.Session()
        if session.get_credentials() is None:
            return [preflight.Check("AWS", True, "no credentials here: EFS and S3 checks skipped")]
    except ImportError:
        return [preflight.Check("AWS", True, "boto3 missing: EFS and S3 checks skipped")]
    checks = []
    fs_id = preflight.file_system_id(policy, classes)
    pods = sum(int((d.get("spec") or {}).get("replicas") or 1) for d in deployments)
    if policy.volume == "efs" and fs_id:
        efs = session.client("efs")
        try:
            systems = efs.describe_file_systems(FileSystemId=fs_id)["FileSystems"]
            targets = len(efs.describe_mount_targets(FileSystemId=fs_id)["MountTargets"])
            points = len(efs.describe_access_points(FileSystemId=fs_id)["AccessPoints"])
        except botocore.exceptions.ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            systems, targets, points = ([], 0, 0) if code == "FileSystemNotFound" else (None, 0, 0)
            if systems is None:
                checks.append(preflight.Check(f"EFS {fs_id}", False, f"cannot describe: {code}",
                                              "grant elasticfilesystem:Describe* or check the region"))
        if systems is not None:
            checks += preflight.efs_checks(fs_id, systems, targets, points, access_point_limit, pods)
    s3 = session.client("s3")
    for bucket in sorted(preflight.source_buckets(deployments)):
        try:
            s3.head_bucket(Bucket=bucket)
            checks.append(preflight.Check(f"bucket {bucket}", True, "reachable"))
        except botocore.exceptions.ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            checks.append(preflight.Check(f"bucket {bucket}", False, f"not reachable ({code})",
                                          "check the bucket name, its region and the nodes' IAM role"))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cfo-admin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("preflight", "install", "upgrade", "uninstall"))
    parser.add_argument("--kubeconfig", help="kubeconfig (default: KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("--kubectl", default="kubectl", help="kubectl binary (default: kubectl on PATH)")
    parser.add_argument("--dry-run", action="store_true", help="install/upgrade: server-side dry run of the apply")
    parser.add_argument("--registry", help="install/upgrade: where your images are, e.g. 123456789012.dkr.ecr."
                        "eu-west-1.amazonaws.com/customer-friendly (default ghcr.io/customer-friendly)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="install/upgrade: a policy value, such as storageClass=efs-sc (repeatable; on upgrade "
                        "only these keys of the edited policy change)")
    parser.add_argument("--policy", action="append", default=[], type=Path, metavar="FILE",
                        help="install/upgrade: policy values from a YAML file (a data map or a ConfigMap)")
    parser.add_argument("--access-point-limit", type=int, default=1000,
                        help="EFS access points allowed per file system (default 1000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        values = policy_values(args.set, args.policy)
    except (PolicyError, OSError) as err:
        print(f"cfo-admin: {err}", file=sys.stderr)
        return 2
    from kubernetes import client, config

    base = (["--kubeconfig", args.kubeconfig] if args.kubeconfig else []) + (
        ["--context", args.context] if args.context else [])
    try:
        api = config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
    except (config.ConfigException, OSError, TypeError) as err:
        print(f"cfo-admin: cannot load kubeconfig: {err}", file=sys.stderr)
        return 1
    if args.command == "preflight":
        return run_preflight(api, args.access_point_limit)
    installer = Installer(kubectl_runner(args.kubectl, base), client.CoreV1Api(api))
    try:
        if args.command == "uninstall":
            lines = installer.uninstall()
        else:
            lines = installer.install(upgrade=args.command == "upgrade", dry_run=args.dry_run,
                                      registry=args.registry, values=values)
    except KubectlError as err:
        print(f"cfo-admin: {err}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
