#!/usr/bin/env bash
# Builds rancher's local-path-provisioner (the real node's dynamic provisioner for the per-pod
# code volume) from the Go module proxy into the same cache as the Kubernetes binaries.
# Its module zip has no vendor/, so it builds with -mod=mod from a copy of the module.
# A second run builds nothing. Prints the binary's path on stdout.
set -euo pipefail
version=v0.0.30
source "$(cd "$(dirname "$0")" && pwd)/../go-build.sh"
bin="$cache/local-path-provisioner-$version/bin/local-path-provisioner"
begin_build build-provisioner.sh "$bin" "local-path-provisioner $version"
dir=$(GOFLAGS=-mod=mod go mod download -json "github.com/rancher/local-path-provisioner@$version" \
      | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "build-provisioner.sh: go mod download gave no directory" >&2; exit 1; }
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$dir/." "$work/src"
chmod -R u+w "$work/src"
(cd "$work/src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$bin.tmp" .)
end_build build-provisioner.sh "$bin"
