#!/usr/bin/env bash
# The system tools the tests use (real git, real archive tools, a C compiler for Gitea's cgo SQLite).
# Installed with apt when missing.
# `--bench` adds the peers the benchmarks compare against (pigz, GNU time).
# `--node` adds what a local node and `make image` need: podman and buildah (image build, no
# daemon), mmdebstrap (a Debian base made here: no container registry is reachable), containerd,
# runc and the CNI plugins (the kubelet's runtime).
set -euo pipefail
tools=(git unzip zip tar gcc)
[ "${1:-}" = "--bench" ] && tools+=(pigz /usr/bin/time)
[ "${1:-}" = "--node" ] && tools+=(podman buildah mmdebstrap containerd runc /usr/lib/cni/bridge)
missing=()
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0
pkgs=()
for tool in "${missing[@]}"; do
  case "$tool" in
    /usr/bin/time) pkgs+=(time) ;;
    /usr/lib/cni/bridge) pkgs+=(containernetworking-plugins) ;;
    *) pkgs+=("$tool") ;;
  esac
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[tools] installing ${pkgs[*]}" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
else
  echo "[tools] missing: ${missing[*]}; install them (Debian: apt-get install ${pkgs[*]})" >&2
  exit 1
fi
