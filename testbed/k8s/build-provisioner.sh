#!/usr/bin/env bash
# Builds rancher's local-path-provisioner (the real node's dynamic provisioner for the per-pod
# code volume) from the Go module proxy into the same cache as the Kubernetes binaries.
# Its module zip has no vendor/, so it builds with -mod=mod from a copy of the module.
# A second run builds nothing. Prints the binary's path on stdout.
set -euo pipefail
version=v0.0.30
cache=${CFO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/customer-friendly-operator}
bin="$cache/local-path-provisioner-$version/bin/local-path-provisioner"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
command -v go >/dev/null || { echo "build-provisioner.sh: go is not installed" >&2; exit 1; }
start=$(date +%s)
echo "build-provisioner.sh: building local-path-provisioner $version (about 2 minutes, once)..." >&2
dir=$(GOFLAGS=-mod=mod go mod download -json "github.com/rancher/local-path-provisioner@$version" \
      | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "build-provisioner.sh: go mod download gave no directory" >&2; exit 1; }
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$dir/." "$work/src"
chmod -R u+w "$work/src"
mkdir -p "$(dirname "$bin")"
(cd "$work/src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$(dirname "$bin")/.tmp" .)
mv "$(dirname "$bin")/.tmp" "$bin"
echo "build-provisioner.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
