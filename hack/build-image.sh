#!/usr/bin/env bash
# `make image`: build the operator image from the Dockerfile with podman (buildah when podman is
# missing). Usage: hack/build-image.sh IMAGE [BASE]
#   BASE=public (default): FROM python:3.11-slim, pulled from its registry.
#   BASE=local: FROM a Debian base made here by hack/build-base.sh (no registry reachable).
#   Any other value is used as the base image's name.
# Workarounds for this kind of machine, none of which end up in the image:
# - --network host: podman's default bridge network is in a private range, which we never use;
# - --ulimit: root lacks CAP_SYS_RESOURCE here, podman's default limits cannot be set;
# - the host's CA bundle is given as the build secret `build_ca` (pip meets an intercepting CA):
#   mounted for the builder's pip step only, in no layer.
set -euo pipefail
image=${1:?image name, e.g. localhost/projectgen:dev}; base=${2:-public}
repo=$(cd "$(dirname "$0")/.." && pwd)
version=$(python3 -c 'import tomllib,sys;print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$repo/pyproject.toml")
args=(--build-arg "VERSION=$version" --network host
      --ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
case "$base" in
  public) ;;
  local) base=localhost/projectgen-base:bookworm
         bash "$repo/hack/build-base.sh" "$base"
         args+=(--build-arg "BASE=$base" --pull=never) ;;
  *) args+=(--build-arg "BASE=$base") ;;
esac
ca=${BUILD_CA_FILE:-/etc/ssl/certs/ca-certificates.crt}
if [ -s "$ca" ]; then
  args+=(--secret "id=build_ca,src=$ca")
fi
# Layer caches are not trusted: buildah 1.28 (Debian 12) reuses a cached `COPY operator ./operator`
# layer after files in operator/ changed or were added, so an image "built" from new sources ran old
# code. Instead the image is keyed by a digest of everything the build reads (the Dockerfile, the
# build context after .dockerignore, the base image's ID and the build args), built without cache
# when that digest is new, and reused as it is otherwise.
if command -v podman >/dev/null; then tool=podman; else tool=buildah; fi
base_id=$($tool image inspect --format '{{.Id}}' "${base/#public/python:3.11-slim}" 2>/dev/null || echo "$base")
digest=$(
  cd "$repo"
  { printf '%s\n' "$base_id" "${args[*]}"
    find Dockerfile .dockerignore pyproject.toml README.md operator -type f \
      ! -path 'operator/projectgen_dev/*' ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' \
      -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-20
)
keyed="localhost/projectgen-build:$digest"
if $tool image exists "$keyed" 2>/dev/null; then
  echo "[image] sources unchanged since $keyed was built: reusing it"
else
  if [ "$tool" = podman ]; then
    podman build --no-cache "${args[@]}" -t "$keyed" -f "$repo/Dockerfile" "$repo"
  else
    buildah bud --no-cache "${args[@]}" -t "$keyed" -f "$repo/Dockerfile" "$repo"
  fi
fi
$tool tag "$keyed" "$image"
# Older keyed builds are untagged (an image still tagged otherwise stays).
for old in $($tool images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/projectgen-build:' || true); do
  [ "$old" = "$keyed" ] || $tool rmi "$old" >/dev/null 2>&1 || true
done
