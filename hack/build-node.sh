#!/usr/bin/env bash
# Build a node's binaries (kubelet, kube-controller-manager, kube-scheduler) and the pause
# binary beside kube-apiserver in the cache, from the Go module proxy.
# Usage: hack/build-node.sh OUTDIR K8S_VERSION
# Same module trick as hack/build-controlplane.sh (require k8s.io/kubernetes from a scratch
# module, replace each staging module by its published v0.Y.Z twin) and the same version stamp.
# pause comes from build/pause/linux/pause.c of the same module, compiled statically with gcc:
# no registry is reachable for registry.k8s.io/pause. On success OUTDIR/NODE_VERSIONS records
# what was built; projectgen_dev.node only trusts the cache with it.
set -euo pipefail
out=${1:?outdir}; k8s=${2:?k8s version, e.g. v1.34.4}
minor=${k8s#v1.}; staging="v0.${minor}"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local} CGO_ENABLED=0
cmds=(kubelet kube-controller-manager kube-scheduler)
mkdir -p "$out"
rm -f "$out/NODE_VERSIONS"
todo=()
for cmd in "${cmds[@]}"; do
  if [ -x "$out/$cmd" ] && [ "$("$out/$cmd" --version 2>/dev/null)" != "Kubernetes $k8s" ]; then
    echo "[node] $out/$cmd is not $k8s: rebuilding" >&2
    rm -f "$out/$cmd"
  fi
  [ -x "$out/$cmd" ] || todo+=("$cmd")
done
mkdir -p "$work/k8s" && cd "$work/k8s"
go mod init projectgen.local/node >/dev/null 2>&1
go mod download -json "k8s.io/kubernetes@$k8s" > dl.json
if [ ${#todo[@]} -gt 0 ]; then
  echo "[node] building ${todo[*]} $k8s from the Go module proxy (first time: several minutes)" >&2
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
  { echo 'package tools'; for cmd in "${todo[@]}"; do echo "import _ \"k8s.io/kubernetes/cmd/$cmd\""; done; } > tools.go
  echo "[node] resolving modules" >&2
  go mod tidy >/dev/null 2>&1 || go mod tidy
  major=${k8s#v}; major=${major%%.*}; minor_num=${minor%%.*}
  build_date=$(python3 -c 'import json;print(json.load(open(json.load(open("dl.json"))["Info"]))["Time"])')
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor_num"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date -X $pkg.gitCommit=unknown"
  done
  for cmd in "${todo[@]}"; do
    echo "[node] compiling $cmd" >&2
    go build -trimpath -ldflags="$ldflags" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$out/$cmd.tmp" "$out/$cmd"
  done
fi
if [ ! -x "$out/pause" ]; then
  src=$(python3 -c 'import json;print(json.load(open("dl.json"))["Dir"])')/build/pause/linux/pause.c
  echo "[node] compiling pause from $src (static)" >&2
  gcc -Os -static -Wall -Werror -DVERSION="\"$k8s\"" -o "$out/pause.tmp" "$src"
  strip "$out/pause.tmp"
  mv "$out/pause.tmp" "$out/pause"
fi
printf 'kubelet %s\nkube-controller-manager %s\nkube-scheduler %s\npause %s\n' "$k8s" "$k8s" "$k8s" "$k8s" > "$out/NODE_VERSIONS"
echo "[node] binaries ready in $out" >&2
