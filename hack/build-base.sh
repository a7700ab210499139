#!/usr/bin/env bash
# A Debian 12 base image with Python 3.11 made here, for `make image BASE=local` where no
# container registry is reachable (python:3.11-slim cannot be pulled). The root file system comes
# from Debian's packages with mmdebstrap, is cached as a tarball outside the repo and imported
# into podman's store as IMAGE. Usage: hack/build-base.sh IMAGE [CACHE_DIR]
# Debian's python3 is 3.11 like python:3.11-slim; python3-pip gives `python3 -m pip`.
set -euo pipefail
image=${1:?image name, e.g. localhost/projectgen-base:bookworm}
cache=${2:-${XDG_CACHE_HOME:-$HOME/.cache}/projectgen/images}
tarball="$cache/debian-bookworm-python3.tar"
mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  echo "[image] making a Debian bookworm base with mmdebstrap (first time: a minute or two)" >&2
  mmdebstrap --quiet --format=tar --variant=minbase --include=python3,python3-pip \
    --components=main bookworm "$tarball.tmp" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"
  mv "$tarball.tmp" "$tarball"
fi
if ! podman image exists "$image"; then
  podman import --quiet --change 'CMD ["/bin/bash"]' "$tarball" "$image" >/dev/null
  echo "[image] imported $tarball as $image" >&2
fi
