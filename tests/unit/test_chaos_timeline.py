"""What a chaos trial shows when its requests fail: kube-proxy's rules read from `iptables -S`,
the EndpointSlices' and pods' one-line states, and only the changes around the failures."""

from __future__ import annotations

import time
from pathlib import Path

from testbed.chaos import Changes, describe_pod, describe_slice, log_lines, proxy_rules

NAT = """-N KUBE-SVC-ABC
-A KUBE-SERVICES -d 10.96.0.9/32 -p tcp -m comment --comment "chaos/web:http cluster IP" -j KUBE-SVC-ABC
-A KUBE-SVC-ABC -m comment --comment "chaos/web:http -> 10.88.0.5:9292" -m statistic --probability 0.5 -j KUBE-SEP-1
-A KUBE-SVC-ABC -m comment --comment "chaos/web:http -> 10.88.0.6:9292" -j KUBE-SEP-2
-A KUBE-SVC-DEF -m comment --comment "chaos/web2 -> 10.88.0.7:9292" -j KUBE-SEP-3
-A KUBE-SVC-GHI -m comment --comment "other/web -> 10.88.0.8:9292" -j KUBE-SEP-4"""
REJECT = ('-A KUBE-SERVICES -d 10.96.0.9/32 -p tcp -m comment --comment "chaos/web has no endpoints" '
          "-m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable")


def test_proxy_rules_name_the_services_endpoints_only() -> None:
    assert proxy_rules("chaos/web", NAT, "") == "proxy chaos/web: 10.88.0.5:9292 10.88.0.6:9292"


def test_proxy_rules_show_the_reject_rule_of_a_service_without_endpoints() -> None:
    assert proxy_rules("chaos/web", "", REJECT) == "proxy chaos/web: no endpoints reject"
    assert proxy_rules("chaos/web2", NAT, REJECT) == "proxy chaos/web2: 10.88.0.7:9292"


def test_a_slice_line_names_each_pod_and_its_state() -> None:
    endpoint_slice = {"metadata": {"name": "web-abc"}, "endpoints": [
        {"addresses": ["10.88.0.5"], "targetRef": {"name": "web-1"}, "conditions": {"ready": True}},
        {"addresses": ["10.88.0.6"], "targetRef": {"name": "web-2"}, "conditions": {"ready": False}},
        {"addresses": ["10.88.0.7"], "targetRef": {"name": "web-3"},
         "conditions": {"ready": False, "terminating": True}},
        {"addresses": ["10.88.0.8"]}]}
    assert describe_slice(endpoint_slice) == (
        "slice web-abc web-1=ready web-2=not-ready web-3=not-ready,terminating ['10.88.0.8']=ready")
    assert describe_slice({"metadata": {"name": "empty"}}) == "slice empty"


def test_a_pod_line_has_its_readiness_and_every_container() -> None:
    pod = {"metadata": {"name": "web-1", "deletionTimestamp": "2026-12-02T00:00:00Z"}, "status": {
        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"},
                       {"type": "ContainersReady", "status": "False"}],
        "initContainerStatuses": [{"name": "cfo-agent", "ready": False, "restartCount": 1}],
        "containerStatuses": [{"name": "puma", "ready": True, "restartCount": 0}]}}
    assert describe_pod(pod) == ("pod web-1 deleting Ready=False ContainersReady=False "
                                 "cfo-agent:ready=False,restarts=1 puma:ready=True,restarts=0")


def test_around_gives_the_state_before_then_the_changes_near_the_failures_only() -> None:
    changes = Changes()
    changes.lines = [(1.0, "t1", "a", "a ready"), (2.0, "t2", "b", "b ready"), (11.0, "t3", "a", "a ready"),
                     (12.0, "t4", "a", "a not-ready"), (14.0, "t5", "b", "b ready"), (30.0, "t6", "a", "a ready")]
    assert changes.around(10.0, 13.0, margin=5) == ["  -9.00s t1 a ready", "  -8.00s t2 b ready",
                                                    "  +2.00s t4 a not-ready"]
    assert changes.around(40.0, 41.0, margin=5) == [" -26.00s t5 b ready", " -10.00s t6 a ready"]


def test_log_lines_are_picked_by_klogs_local_time_and_a_needle(tmp_path: Path) -> None:
    at = time.mktime((2026, 12, 2, 14, 59, 6, 0, 0, -1))
    log = tmp_path / "kubelet.log"
    log.write_text('I1202 14:59:04.1 1 kubelet.go:1] "Probe failed" early\n'
                   'I1202 14:59:06.0 1 kubelet.go:1] "Probe failed" pod="chaos/web-1"\n'
                   'I1202 14:59:06.5 1 kubelet.go:1] "other" pod="chaos/web-1"\n'
                   'I1202 14:59:09.0 1 kubelet.go:1] "Probe failed" late\n')
    assert log_lines(log, at, at + 2, ("Probe failed",)) == [
        'I1202 14:59:06.0 1 kubelet.go:1] "Probe failed" pod="chaos/web-1"']
    assert log_lines(tmp_path / "none.log", at, at + 2, ("",)) == []
