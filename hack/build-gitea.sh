#!/usr/bin/env bash
# Build Gitea from the Go module proxy into a cache outside the repo (the real forge the publish
# tests run against). Usage: hack/build-gitea.sh OUTDIR GITEA_VERSION
# code.gitea.io/gitea declares its own module path, so it can be required from a scratch module;
# its go.mod has replace directives, which only apply in the main module, so they are copied
# into the scratch module (as hack/build-controlplane.sh does for kubernetes' staging modules).
# `go get -tool` records the main package so its whole import graph is resolved.
# Tags as Gitea's own release build minus `bindata`: `sqlite sqlite_unlock_notify` (mattn's
# go-sqlite3, cgo). `bindata` needs generated files that are not in the module zip
# (modules/*/bindata.dat), so templates/, options/ and public/ are copied next to the binary
# and Gitea loads them from STATIC_ROOT_PATH. The frontend (public/assets JS/CSS, built with
# pnpm) is not in the zip either: the web UI renders unstyled, the REST API and git over HTTP
# (all the tests use) do not need it.
# The version is stamped like Gitea's Makefile (-X main.Version). On success OUTDIR/VERSION
# records what was built; projectgen_dev.gitea only trusts the cache with it.
set -euo pipefail
out=${1:?outdir}; version=${2:?gitea version, e.g. v1.26.0}
tags="sqlite sqlite_unlock_notify"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local} CGO_ENABLED=1
mkdir -p "$out"
rm -f "$out/VERSION"
if ! command -v gcc >/dev/null 2>&1 && ! command -v cc >/dev/null 2>&1; then
  echo "[gitea] a C compiler is needed (go-sqlite3 uses cgo); Debian: apt-get install gcc" >&2
  exit 1
fi
# `gitea --version` prints "gitea version 1.26.0 built with ...".
if [ -x "$out/gitea" ] && ! "$out/gitea" --version 2>/dev/null | grep -qi "^gitea version ${version#v} "; then
  echo "[gitea] $out/gitea is not $version: rebuilding" >&2
  rm -f "$out/gitea"
fi
cd "$work"
go mod init projectgen.local/gitea >/dev/null 2>&1
go mod download -json "code.gitea.io/gitea@$version" > dl.json
src=$(python3 -c 'import json;print(json.load(open("dl.json"))["Dir"])')
if [ ! -x "$out/gitea" ]; then
  echo "[gitea] building Gitea $version from the Go module proxy (first time: many minutes)" >&2
  python3 - "$src/go.mod" > replaces.txt <<'PY'
import re, sys
text = open(sys.argv[1]).read()
# single-line `replace a => b v` and the lines of `replace ( ... )` blocks
lines = re.findall(r"^replace\s+([^(\n].*)$", text, re.M)
for block in re.findall(r"^replace\s*\((.*?)^\)", text, re.M | re.S):
    lines += block.splitlines()
for line in lines:
    line = line.split("//")[0].strip()
    if not line:
        continue
    old, new = (part.split() for part in line.split("=>"))
    print("=".join(["@".join(old), "@".join(new)]))
PY
  args=()
  while read -r r; do args+=("-replace=$r"); done < replaces.txt
  go mod edit "${args[@]}"
  echo "[gitea] resolving modules" >&2
  go get -tool "code.gitea.io/gitea@$version" >/dev/null 2>&1 || go get -tool "code.gitea.io/gitea@$version"
  echo "[gitea] compiling (tags: $tags)" >&2
  go build -trimpath -tags "$tags" \
    -ldflags "-s -w -X main.Version=${version#v} -X 'main.Tags=$tags'" \
    -o "$out/gitea.tmp" code.gitea.io/gitea
  mv "$out/gitea.tmp" "$out/gitea"
fi
# The assets Gitea reads from STATIC_ROOT_PATH without `bindata` (see above).
rm -rf "$out/static.tmp" && mkdir -p "$out/static.tmp"
for d in templates options public; do cp -r "$src/$d" "$out/static.tmp/$d"; done
chmod -R u+w "$out/static.tmp"
rm -rf "$out/static" && mv "$out/static.tmp" "$out/static"
echo "gitea $version" > "$out/VERSION"
echo "[gitea] ready in $out" >&2
