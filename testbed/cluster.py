"""`make cluster`: the real node with the product installed, left up for you to use.

Starts the real single-node cluster (`node.py`), release sources the pods reach (S3 from moto,
HTTPS with a private CA, a host directory) with v1 to v4 and a broken release published, and
installs the webhook and the controller with `cfo-admin install`. Prints the KUBECONFIG and the
tear-down command, then exits: everything keeps running in the background until
`make cluster-down`, which deletes the pods through the API, stops every process and removes
the network state, mounts and cgroups, and restores the kernel settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from testbed.controlplane import ROOT
from testbed.node import Node, state_file, sweep_leftovers
from testbed.node_app import Product, Sources, node_release


def up(workdir: Path) -> int:
    if state_file().is_file():
        print("a cluster is already up (make cluster-down first)", file=sys.stderr)
        return 1
    print("starting the real node (containerd, kubelet, control plane, kube-proxy, provisioner) ...",
          file=sys.stderr, flush=True)
    node = Node(workdir).start()
    try:
        sources = Sources(workdir / "sources").start()
        for proc in sources.processes():
            node.adopt(proc)
        for release in ("v1", "v2", "v3", "v4"):
            sources.publish(release, node_release(release))
        sources.publish("broken", node_release("broken", broken=True))
        print("installing with cfo-admin install ...", file=sys.stderr, flush=True)
        Product(node, sources, workdir / "product").install(files=True)
    except BaseException:
        node.stop()
        raise
    print(f"# node started in {node.timings['start']:.0f}s; logs in {workdir / 'logs'}", file=sys.stderr)
    print(f"# release sources: {sources.s3()}  {sources.https()}  {sources.file()}", file=sys.stderr)
    print(f"export KUBECONFIG={node.kubeconfig}")
    print(f"export PATH={node.control.bin_dir}:{Path(sys.executable).parent}:$PATH   # kubectl, kubectl cfo")
    print("# tear down: make cluster-down", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=ROOT / ".cluster", help="state directory (default .cluster/)")
    parser.add_argument("--down", action="store_true", help="tear down the cluster that `make cluster` left up")
    args = parser.parse_args(argv)
    if args.down:
        if not sweep_leftovers(graceful=True):
            print("no cluster is up", file=sys.stderr)
        return 0
    return up(args.dir.resolve())


if __name__ == "__main__":
    sys.exit(main())
