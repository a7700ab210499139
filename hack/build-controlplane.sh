#!/usr/bin/env bash
# Build kube-apiserver and etcd from the Go module proxy into a cache outside the repo.
# Usage: hack/build-controlplane.sh OUTDIR K8S_VERSION ETCD_VERSION
# k8s.io/kubernetes is not meant to be used as a module: its go.mod points every staging
# module (k8s.io/api, ...) at ./staging. We require it from a scratch module and replace
# each staging module by its published v0.Y.Z twin, read from kubernetes' own go.mod.
# The version is stamped with -ldflags -X like kubernetes' hack/lib/version.sh (a plain `go build`
# reports v0.0.0-master). A binary of another version already in OUTDIR is rebuilt. On success
# OUTDIR/VERSIONS records what was built; projectgen_dev.controlplane only trusts the cache with it.
set -euo pipefail
out=${1:?outdir}; k8s=${2:?k8s version, e.g. v1.34.4}; etcd=${3:?etcd version, e.g. v3.6.5}
minor=${k8s#v1.}; staging="v0.${minor}"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local} CGO_ENABLED=0
mkdir -p "$out"
rm -f "$out/VERSIONS"
# `kube-apiserver --version` prints "Kubernetes v1.34.4"; `etcd --version` "etcd Version: 3.6.5".
if [ -x "$out/kube-apiserver" ] && [ "$("$out/kube-apiserver" --version 2>/dev/null)" != "Kubernetes $k8s" ]; then
  echo "[controlplane] $out/kube-apiserver is not $k8s: rebuilding" >&2
  rm -f "$out/kube-apiserver"
fi
if [ -x "$out/etcd" ] && ! "$out/etcd" --version 2>/dev/null | grep -qx "etcd Version: ${etcd#v}"; then
  echo "[controlplane] $out/etcd is not $etcd: rebuilding" >&2
  rm -f "$out/etcd"
fi
if [ ! -x "$out/kube-apiserver" ]; then
  echo "[controlplane] building kube-apiserver $k8s from the Go module proxy (first time: several minutes)" >&2
  mkdir -p "$work/k8s" && cd "$work/k8s"
  go mod init projectgen.local/apiserver >/dev/null 2>&1
  go mod download -json "k8s.io/kubernetes@$k8s" > dl.json
  gomod=$(python3 -c 'import json,sys;print(json.load(open("dl.json"))["GoMod"])')
  python3 - "$gomod" "$staging" > replaces.txt <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for mod in sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", text, re.M))):
    print(f"{mod}={mod}@{sys.argv[2]}")
PY
  args=()
  while read -r r; do args+=("-replace=$r"); done < replaces.txt
  go mod edit "${args[@]}" -require="k8s.io/kubernetes@$k8s"
  printf 'package tools\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' > tools.go
  echo "[controlplane] resolving modules" >&2
  go mod tidy >/dev/null 2>&1 || go mod tidy
  # version stamp, as kubernetes' hack/lib/version.sh; the proxy gives no commit, the date is the tag's
  major=${k8s#v}; major=${major%%.*}; minor_num=${minor%%.*}
  build_date=$(python3 -c 'import json;print(json.load(open(json.load(open("dl.json"))["Info"]))["Time"])')
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor_num"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date -X $pkg.gitCommit=unknown"
  done
  echo "[controlplane] compiling kube-apiserver" >&2
  go build -trimpath -ldflags="$ldflags" -o "$out/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  mv "$out/kube-apiserver.tmp" "$out/kube-apiserver"
fi
if [ ! -x "$out/etcd" ]; then
  echo "[controlplane] building etcd $etcd from the Go module proxy" >&2
  mkdir -p "$work/etcd" && cd "$work/etcd"
  go mod init projectgen.local/etcd >/dev/null 2>&1
  printf 'package tools\nimport _ "go.etcd.io/etcd/server/v3/etcdmain"\n' > tools.go
  go mod edit -require="go.etcd.io/etcd/server/v3@$etcd"
  go mod tidy >/dev/null 2>&1 || go mod tidy
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  rm tools.go
  go mod tidy >/dev/null 2>&1 || go mod tidy
  echo "[controlplane] compiling etcd" >&2
  go build -trimpath -ldflags="-s -w" -o "$out/etcd.tmp" .
  mv "$out/etcd.tmp" "$out/etcd"
fi
printf 'kube-apiserver %s\netcd %s\n' "$k8s" "$etcd" > "$out/VERSIONS"
echo "[controlplane] binaries ready in $out" >&2
