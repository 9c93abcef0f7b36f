#!/usr/bin/env bash
# Builds the helm CLI (helm.sh/helm/v3, pinned by go.mod/go.sum beside this script) from the Go
# module proxy into the same cache as the Kubernetes binaries, keyed by version. The chart's tests
# run it (helm lint, template, install, upgrade, uninstall). A second run builds nothing.
# Prints the binary's path on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=v3.22.0
client_go=0.37   # k8s.io/client-go in helm's go.mod: its capabilities' default Kubernetes 1.37
source "$here/../go-build.sh"
bin="$cache/helm-$version/bin/helm"
begin_build helm/build.sh "$bin" "helm $version"
# The same -X stamps as helm's own Makefile: without them `helm version` reports v3.22 and
# .Capabilities.KubeVersion falls back to 1.20.
major=$(( ${client_go%%.*} + 1 )); minor=${client_go#*.}
flags="-s -w -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  flags+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
done
(cd "$here" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$flags" -o "$bin.tmp" helm.sh/helm/v3/cmd/helm)
end_build helm/build.sh "$bin"
