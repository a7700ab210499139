#!/usr/bin/env bash
# Build promtool (Prometheus' rule checker and rule unit-test runner) from the Go module proxy into a
# cache outside the repo. Usage: hack/build-promtool.sh OUTDIR MODULE_VERSION
# Prometheus 3.x is published as the Go module github.com/prometheus/prometheus v0.3MM.P for release
# 3.MM.P; the module's own VERSION file says which release it is, and the build checks it matches.
# The module has no replace directives, so `go install pkg@version` builds it as its go.mod pins.
# Built with `-tags remove_all_sd`, Prometheus' own switch that leaves the service-discovery plugins
# out (AWS, Azure, GCE, ... SDKs): `promtool check service-discovery` is the only command using them,
# and the tests do not; the build is several times shorter.
# The version is stamped as Prometheus' Makefile (promu) does, through prometheus/common/version.
# On success OUTDIR/VERSION records what was built; projectgen_dev.promtool only trusts the cache with it.
set -euo pipefail
out=${1:?outdir}; module=${2:?module version, e.g. v0.316.0}
export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local} CGO_ENABLED=0
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
rm -f "$out/VERSION"
cd "$work"
go mod init projectgen.local/promtool >/dev/null 2>&1
go mod download -json "github.com/prometheus/prometheus@$module" > dl.json
src=$(python3 -c 'import json;print(json.load(open("dl.json"))["Dir"])')
release=$(tr -d '[:space:]' < "$src/VERSION")
minor=${module#v0.}; minor=${minor%%.*}          # v0.316.0 -> 316 -> 3.16
expected="${minor:0:1}.$((10#${minor:1})).${module##*.}"
if [ "$release" != "$expected" ]; then
  echo "[promtool] module $module says it is Prometheus $release, expected $expected" >&2
  exit 1
fi
if [ -x "$out/promtool" ] && ! "$out/promtool" --version 2>/dev/null | grep -q "^promtool, version $release "; then
  echo "[promtool] $out/promtool is not $release: rebuilding" >&2
  rm -f "$out/promtool"
fi
if [ ! -x "$out/promtool" ]; then
  echo "[promtool] building promtool $release ($module) from the Go module proxy (first time: minutes)" >&2
  pkg=github.com/prometheus/common/version
  GOBIN="$work/bin" go install -trimpath -tags remove_all_sd \
    -ldflags "-s -w -X $pkg.Version=$release -X $pkg.Branch=HEAD -X $pkg.Revision=$module -X $pkg.BuildUser=projectgen" \
    "github.com/prometheus/prometheus/cmd/promtool@$module"
  mv "$work/bin/promtool" "$out/promtool.tmp"
  mv "$out/promtool.tmp" "$out/promtool"
fi
echo "promtool $release $module" > "$out/VERSION"
echo "[promtool] ready in $out" >&2
