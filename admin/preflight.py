"""`cfo-admin preflight`: what the cluster (and AWS) must have, checked before installing.

The judgements are pure functions over gathered facts, unit-tested with tables; `gather_*`
only reads (the Kubernetes version, StorageClasses, opted-in Deployments, and with boto3
and credentials, the EFS file system and the release buckets).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from customer_friendly.contract import SOURCE
from customer_friendly.contract.objects import annotations_of
from customer_friendly.contract.policy import Policy

EFS_PROVISIONER = "efs.csi.aws.com"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    advice: str = ""


def parse_version(git_version: str) -> tuple[int, int]:
    match = re.match(r"^v?(\d+)\.(\d+)", git_version)
    if not match:
        raise ValueError(f"cannot read a Kubernetes version from {git_version!r}")
    return int(match.group(1)), int(match.group(2))


def version_checks(git_version: str, policy: Policy) -> list[Check]:
    version = parse_version(git_version)
    shown = f"{version[0]}.{version[1]}"
    checks = []
    sidecars = version >= (1, 29)
    if policy.native_sidecars and not sidecars:
        checks.append(Check("native sidecars", False, f"Kubernetes {shown} has no native sidecars (1.29+)",
                            'set nativeSidecars: "false" in the policy ConfigMap'))
    else:
        checks.append(Check("native sidecars", True, f"Kubernetes {shown}: " + (
            "native sidecars available" if sidecars else "agent runs as a regular container (policy)")))
    sleep = version >= (1, 30)
    if policy.pre_stop_sleep_action and not sleep:
        checks.append(Check("preStop sleep action", False, f"Kubernetes {shown} has no preStop sleep action "
                            "(beta and on by default from 1.30)",
                            'set preStopSleepAction: "false" in the policy (the app image then needs `sleep`)'))
    else:
        checks.append(Check("preStop sleep action", True, "sleep action available" if sleep
                            else "exec of `sleep` (policy)"))
    return checks


def storage_class_checks(policy: Policy, storage_classes: list[dict[str, Any]]) -> list[Check]:
    if policy.volume != "efs":
        return [Check("code volume", True, "policy uses emptyDir; no StorageClass needed")]
    found = next((sc for sc in storage_classes if sc["metadata"]["name"] == policy.storage_class), None)
    if found is None:
        return [Check(f"StorageClass {policy.storage_class}", False, "not found",
                      f"create it with provisioner {EFS_PROVISIONER}, parameters provisioningMode: efs-ap and "
                      "fileSystemId: fs-…, or set storageClass/volume in the policy")]
    checks = []
    provisioner = found.get("provisioner")
    checks.append(Check(f"StorageClass {policy.storage_class}", provisioner == EFS_PROVISIONER,
                        f"provisioner {provisioner}", "" if provisioner == EFS_PROVISIONER
                        else f"use the EFS CSI driver ({EFS_PROVISIONER})"))
    mode = (found.get("parameters") or {}).get("provisioningMode")
    checks.append(Check("EFS dynamic provisioning", mode == "efs-ap", f"provisioningMode {mode}",
                        "" if mode == "efs-ap" else "set parameters.provisioningMode: efs-ap (one access point "
                        "per pod)"))
    return checks


def file_system_id(policy: Policy, storage_classes: list[dict[str, Any]]) -> str | None:
    found = next((sc for sc in storage_classes if sc["metadata"]["name"] == policy.storage_class), None)
    return ((found or {}).get("parameters") or {}).get("fileSystemId")


def efs_checks(fs_id: str, file_systems: list[dict[str, Any]], mount_targets: int, access_points: int,
               access_point_limit: int, pods_needed: int) -> list[Check]:
    if not any(fs.get("FileSystemId") == fs_id for fs in file_systems):
        return [Check(f"EFS {fs_id}", False, "file system not found", "check fileSystemId and the AWS region")]
    room = access_point_limit - access_points
    return [
        Check(f"EFS {fs_id}", True, "file system exists"),
        Check("EFS mount targets", mount_targets > 0, f"{mount_targets} mount target(s)",
              "" if mount_targets else "create a mount target in each subnet your nodes use"),
        Check("EFS access points", room >= pods_needed,
              f"{access_points} of {access_point_limit} used, {pods_needed} needed by opted-in pods",
              "" if room >= pods_needed else "each pod takes one access point: raise the quota or use emptyDir"),
    ]


def source_buckets(deployments: list[dict[str, Any]]) -> set[str]:
    buckets = set()
    for deployment in deployments:
        source = annotations_of(deployment).get(SOURCE, "")
        if source.startswith("s3://"):
            buckets.add(urllib.parse.urlsplit(source).netloc)
    return buckets


def render(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        mark = "ok " if check.ok else "FAIL"
        lines.append(f"[{mark}] {check.name}: {check.detail}")
        if check.advice and not check.ok:
            lines.append(f"       -> {check.advice}")
    failed = sum(not c.ok for c in checks)
    lines.append(f"{len(checks) - failed} of {len(checks)} checks passed" + ("" if not failed else
                 f"; fix the {failed} marked FAIL before installing"))
    return "\n".join(lines)
