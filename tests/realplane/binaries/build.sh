#!/usr/bin/env bash
# Builds the real control plane's binaries from the Go module proxy, once, into a cache outside
# the checkout, and prints the directory that holds them:
#
#   kube-apiserver kube-controller-manager kube-scheduler kubectl   (k8s.io/kubernetes, ./kubernetes)
#   etcd                                                            (go.etcd.io/etcd/server/v3, ./etcd)
#   kwok                                                            (sigs.k8s.io/kwok, ./kwok)
#
# The cache key is a hash of everything that decides the result: this script, the three wrapper
# modules (go.mod, go.sum, Go files) and the Go toolchain. A second run with the same inputs
# prints the cached directory and builds nothing; Rust changes never rebuild anything.
#
#   build.sh               build if needed, print the bin directory
#   build.sh --print-dir   print the bin directory the current inputs map to (may not exist yet)
#
# Environment: K8S_CALICO_CONTROLPLANE_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/k8s-calico/
# controlplane); GOPROXY, GOFLAGS and the rest of Go's own settings are honoured.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
modules=(kubernetes etcd kwok)

if ! command -v go >/dev/null; then
    echo "build.sh: go not found: the real control plane is built from Go modules; install Go 1.26 or newer (https://go.dev/dl/)" >&2
    exit 1
fi

inputs_hash() {
    {
        cat "$here/build.sh"
        for m in "${modules[@]}"; do
            cat "$here/$m/go.mod" "$here/$m/go.sum" "$here/$m"/*.go
        done
        go env GOVERSION GOOS GOARCH
    } | sha256sum | cut -c1-20
}

cache=${K8S_CALICO_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8s-calico/controlplane}
key=$(inputs_hash)
bin="$cache/$key/bin"

if [[ ${1-} == --print-dir ]]; then
    echo "$bin"
    exit 0
fi
if [[ -f $bin/.complete ]]; then
    echo "$bin"
    exit 0
fi

# One build per key at a time, however many checkouts ask for it.
mkdir -p "$cache"
exec 9>"$cache/$key.lock"
flock 9
if [[ -f $bin/.complete ]]; then
    echo "$bin"
    exit 0
fi

work=$(mktemp -d "$cache/.build-$key.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin"
export CGO_ENABLED=0
# go.mod and go.sum are committed: the build must not change them, and every module must come
# from the proxy with the checksum go.sum records.
export GOFLAGS="${GOFLAGS:-} -mod=readonly"
# -s -w: no symbol table or DWARF (the four Kubernetes binaries: 470 MB unstripped, 330 MB).
strip_flags="-s -w"

say() { echo "build.sh: $*" >&2; }

# The version variables upstream's hack/lib/version.sh sets, so `kube-apiserver --version`
# and `kubectl version` report the release. gitCommit stays empty: the module archive carries
# no commit, and "archive" is the tree state upstream reports for builds from a source archive.
kubernetes_ldflags() {
    local version major minor date flags=""
    version=$(cd "$here/kubernetes" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
    major=${version#v}
    major=${major%%.*}
    minor=${version#v*.}
    minor=${minor%%.*}
    date=$(cd "$here/kubernetes" && go mod download -json k8s.io/kubernetes@"$version" |
        sed -n 's/.*"Time": *"\([^"]*\)".*/\1/p')
    [[ -n $date ]] || date=$(cd "$here/kubernetes" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        flags+=" -X '$pkg.gitVersion=$version' -X '$pkg.gitMajor=$major' -X '$pkg.gitMinor=$minor'"
        flags+=" -X '$pkg.gitCommit=' -X '$pkg.gitTreeState=archive' -X '$pkg.buildDate=$date'"
    done
    echo "$strip_flags$flags"
}

build_module() {
    local module=$1 ldflags=$2
    shift 2
    say "building $module: $*"
    (cd "$here/$module" && go mod download && go build -ldflags "$ldflags" -o "$work/bin/" "$@")
}

start=$SECONDS
build_module kubernetes "$(kubernetes_ldflags)" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
etcd_version=$(cd "$here/etcd" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
build_module etcd "$strip_flags -X 'go.etcd.io/etcd/api/v3/version.GitSHA=module $etcd_version'" .
build_module kwok "$strip_flags" sigs.k8s.io/kwok/cmd/kwok

for b in kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok; do
    [[ -x $work/bin/$b ]] || { say "$b was not built"; exit 1; }
done
# Each binary runs and reports its version (whole output: a pipe closed early would fail the
# build under pipefail).
"$work/bin/kube-apiserver" --version >&2
"$work/bin/etcd" --version >&2
"$work/bin/kwok" --version >&2
echo "built in $((SECONDS - start)) s with $(go env GOVERSION)" >"$work/bin/.complete"
rm -rf "${cache:?}/$key"
mkdir -p "$cache/$key"
mv "$work/bin" "$bin"
say "$(cat "$bin/.complete"): $bin"
echo "$bin"
