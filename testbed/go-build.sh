# Sourced by the Go build scripts (testbed/helm/build.sh, testbed/k8s/build-provisioner.sh):
# the cache every built binary goes to, and the start every one-binary build shares.
cache=${CFO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/customer-friendly-operator}

# begin_build SCRIPT BIN WHAT: when BIN is built already, print its path and end the script;
# otherwise check that Go is there, say what is built, and set `start` for the closing line.
begin_build() {
  if [ -x "$2" ]; then echo "$2"; exit 0; fi
  command -v go >/dev/null || { echo "$1: go is not installed; it is needed to build $3" >&2; exit 1; }
  start=$(date +%s)
  echo "$1: building $3 (once; a few minutes on 2 cores)..." >&2
  mkdir -p "$(dirname "$2")"
}

# end_build SCRIPT BIN: move the fresh build (BIN.tmp) in place and print its path.
end_build() {
  mv "$2.tmp" "$2"
  echo "$1: built in $(( $(date +%s) - start ))s" >&2
  echo "$2"
}
