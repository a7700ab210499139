"""A local Kubernetes cluster with one real node, for the tests that run the image and the manifests.

Beside :class:`~projectgen_dev.controlplane.ControlPlane` (etcd + kube-apiserver) it runs
kube-controller-manager (garbage collection, namespaces, ServiceAccounts, kube-root-ca.crt),
kube-scheduler, containerd (runc, the CNI bridge plugin) and a kubelet.

Where things are:

- Everything network-facing lives in one network namespace of ours (:class:`NetworkNamespace`):
  the apiserver listens on its 198.18.x.y address, which is also the node IP (the kubelet refuses a
  loopback one). Pods get addresses of :data:`POD_CIDR` on a bridge inside that namespace.
  iptables/nft chains the kubelet makes are that namespace's and go with it.
- Pods reach the apiserver on the node IP (``KUBERNETES_SERVICE_HOST``/``PORT`` set on the
  container, see :meth:`Node.apiserver_env`): there is no kube-proxy, so the ``kubernetes``
  ClusterIP leads nowhere. The apiserver's address is local to the namespace the bridge is in, so
  a pod on the bridge reaches it without any NAT; pods stay off hostNetwork, as users run them.
- containerd and the kubelet share one private mount namespace (a holder process made with
  ``unshare --mount --propagation slave``): their mounts (overlays, volumes) never appear on the
  host and vanish with the namespace. containerd has its own root, state, socket and CNI config
  under the work directory; podman's /etc/cni/net.d is never read.
- The kubelet's cgroups are under a cgroup root of ours in every cgroup v1 hierarchy (or the
  cgroup v2 tree), removed after every process in them is killed.
- The kubelet sets host-wide sysctls (:data:`KUBELET_SYSCTLS`): recorded before, restored after.

Binaries: kubelet, kube-controller-manager, kube-scheduler and a static ``pause`` are looked up in
``$KUBEBUILDER_ASSETS``, else in the control plane's cache, built there by ``hack/build-node.sh``
from the Go module proxy. containerd, runc and the CNI plugins come from the distribution
(``hack/ensure-tools.sh --node``). The pause image is written here as an OCI archive around the
static binary (no registry is reachable).

Usage::

    with Node() as node:
        node.load_image(archive)          # `podman save --format docker-archive` output
        node.kubectl("apply", "-k", overlay)

or ``python -m projectgen_dev controlplane --node``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import kubernetes.client
import yaml

from projectgen_dev import buildcache
from projectgen_dev import netns as netns_module
from projectgen_dev.controlplane import (
    K8S_VERSION,
    ControlPlane,
    ControlPlaneError,
    _free_ports,
    _Process,
    _stop_signals,
    _tail,
    cache_dir,
    find_binaries,
)
from projectgen_dev.netns import NetworkNamespace
from projectgen_dev.pki import CertificateAuthority

NODE_BINARIES = ("kubelet", "kube-controller-manager", "kube-scheduler", "pause")
NODE_NAME = "projectgen-node"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
"""The name the pause image gets here: containerd's default sandbox image name of its era."""
POD_CIDR = "198.19.128.0/24"
"""Pod addresses, inside our network namespace only (198.19.0.0/24 is the service range)."""
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
"""Host-wide sysctls the kubelet's container manager sets (pkg/kubelet/cm, setupKernelTunables)."""
CGROUP_ROOT = Path("/sys/fs/cgroup")
REPO_ROOT = Path(__file__).resolve().parents[2]


class NodeError(ControlPlaneError):
    """The node could not be started or used."""


def _log(message: str) -> None:
    print(f"[node] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Prerequisites
# --------------------------------------------------------------------------------------------


def unavailable() -> str | None:
    """Why a node cannot run here, or None when it can (the tools may still need installing)."""
    reason = netns_module.unavailable()
    if reason is not None:
        return reason
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"`{tool}` (util-linux) is not installed"
    if not CGROUP_ROOT.is_dir():
        return f"no cgroup file system at {CGROUP_ROOT}"
    return None


def ensure_tools() -> None:
    """containerd, runc, the CNI plugins, podman, mmdebstrap: installed with apt when missing."""
    script = REPO_ROOT / "hack" / "ensure-tools.sh"
    if not script.is_file():
        raise NodeError("hack/ensure-tools.sh is only available in a source checkout")
    proc = subprocess.run(["bash", str(script), "--node"], stdout=sys.stderr, check=False)
    if proc.returncode != 0:
        raise NodeError(f"{script} --node failed (exit code {proc.returncode})")


def _node_cache_complete(directory: Path) -> bool:
    try:
        stamp = (directory / "NODE_VERSIONS").read_text()
    except OSError:
        return False
    wanted = "".join(f"{name} {K8S_VERSION}\n" for name in NODE_BINARIES)
    return stamp == wanted and all(os.access(directory / n, os.X_OK) for n in NODE_BINARIES)


def find_node_binaries() -> Path:
    """The directory holding kubelet, kube-controller-manager, kube-scheduler and pause.

    ``$KUBEBUILDER_ASSETS`` when set (it must hold them), else the control plane's cache, built
    into with ``hack/build-node.sh`` (a minute with a warm Go cache; a file lock serialises builders).
    """
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        directory = Path(assets).expanduser()
        missing = [n for n in NODE_BINARIES if not os.access(directory / n, os.X_OK)]
        if missing:
            raise NodeError(f"KUBEBUILDER_ASSETS={assets} does not contain executable {', '.join(missing)}")
        return directory
    target = cache_dir()
    if _node_cache_complete(target):
        return target
    script = REPO_ROOT / "hack" / "build-node.sh"
    if not script.is_file() or shutil.which("go") is None:
        raise NodeError(
            f"{', '.join(NODE_BINARIES)} not found in {target}; set KUBEBUILDER_ASSETS, or build them "
            f"with hack/build-node.sh (needs a source checkout and `go`)"
        )
    buildcache.build_once(
        target.parent / f".{target.name}.node.lock",
        lambda: _node_cache_complete(target),
        ["bash", str(script), str(target), K8S_VERSION],
        what=f"the node binaries into {target}",
        error=NodeError,
        log=_log,
    )
    return target


# --------------------------------------------------------------------------------------------
# Host state: what the node may change, recorded before and compared (and restored) after
# --------------------------------------------------------------------------------------------


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=timeout)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _iptables_chains() -> list[str]:
    """Tables and chains (not counters) of iptables-save and ip6tables-save."""
    chains = []
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            for line in _run([tool], check=False).splitlines():
                if line.startswith(("*", ":")):
                    chains.append(f"{tool} {line.split()[0]}")
    return chains


def _nft_chains() -> list[str]:
    if shutil.which("nft") is None:
        return []
    return [
        line.strip()
        for line in _run(["nft", "list", "ruleset"], check=False).splitlines()
        if "chain" in line or "table" in line
    ]


def _mounts() -> list[str]:
    return sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())


def _links() -> list[str]:
    return sorted(
        line.split(":")[1].strip().split("@")[0] for line in _run(["ip", "-o", "link", "show"]).splitlines()
    )


def _netns() -> list[str]:
    return sorted(
        line.split()[0] for line in _run(["ip", "netns", "list"], check=False).splitlines() if line.strip()
    )


@dataclass(frozen=True)
class HostState:
    """What a node could leave behind on the host, as comparable values."""

    sysctls: dict[str, str]
    links: list[str]
    netns: list[str]
    iptables: list[str]
    nft: list[str]
    mounts: list[str]
    cgroups: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def snapshot(cls) -> HostState:
        sysctls = {}
        for name in KUBELET_SYSCTLS:
            with contextlib.suppress(OSError):
                sysctls[name] = (Path("/proc/sys") / name).read_text().strip()
        cgroups = {}
        for hierarchy in _cgroup_hierarchies():
            cgroups[str(hierarchy)] = sorted(p.name for p in hierarchy.iterdir() if p.is_dir())
        return cls(sysctls, _links(), _netns(), _iptables_chains(), _nft_chains(), _mounts(), cgroups)

    def restore_sysctls(self) -> None:
        for name, value in self.sysctls.items():
            path = Path("/proc/sys") / name
            with contextlib.suppress(OSError):
                if path.read_text().strip() != value:
                    path.write_text(value)

    def differences(self, other: HostState, foreign: Callable[[str], bool] | None = None) -> list[str]:
        """What differs from ``other``; list items for which ``foreign`` is true (another test
        run's namespaces on a shared machine) are left out of the comparison."""
        keep = (lambda item: not foreign(item)) if foreign is not None else (lambda item: True)
        diffs = []
        for name in ("sysctls", "links", "netns", "iptables", "nft", "mounts", "cgroups"):
            a, b = getattr(self, name), getattr(other, name)
            if isinstance(a, list):
                a, b = [x for x in a if keep(x)], [x for x in b if keep(x)]
            if a != b:
                if isinstance(a, dict):
                    keys = sorted(set(a) | set(b))
                    diffs.append(
                        f"{name}: "
                        + ", ".join(
                            f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)
                        )
                    )
                else:
                    diffs.append(f"{name}: gone {sorted(set(a) - set(b))}, new {sorted(set(b) - set(a))}")
        return diffs


def _cgroup_hierarchies() -> list[Path]:
    """The cgroup v1 hierarchies to place a cgroup root in, or the v2 root alone."""
    if (CGROUP_ROOT / "cgroup.controllers").is_file():
        return [CGROUP_ROOT]
    found = []
    for entry in sorted(CGROUP_ROOT.iterdir()):
        if (
            entry.is_dir()
            and not entry.is_symlink()
            and (entry / "cgroup.procs").is_file()
            and entry.name != "unified"
        ):
            found.append(entry)
    return found


# --------------------------------------------------------------------------------------------
# The pause image, written as an OCI archive around the static binary
# --------------------------------------------------------------------------------------------


def _blob(blobs: dict[str, bytes], data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def write_pause_archive(pause: Path, out: Path, name: str = PAUSE_IMAGE) -> Path:
    """An OCI image archive holding ``/pause`` (uid 65535, as upstream's), named ``name``."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as layer:
        info = tarfile.TarInfo("pause")
        data = pause.read_bytes()
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        layer.addfile(info, io.BytesIO(data))
    layer_bytes = layer_buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    compressed = gzip.compress(layer_bytes, mtime=0)
    blobs: dict[str, bytes] = {}
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_blob(blobs, json.dumps(config).encode()),
        },
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(blobs, compressed)}],
    }
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **_blob(blobs, json.dumps(manifest).encode()),
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rpartition(":")[2],
                },
            }
        ],
    }
    with tarfile.open(out, "w") as archive:

        def add(path: str, data: bytes) -> None:
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            add(f"blobs/sha256/{digest.removeprefix('sha256:')}", data)
    return out


# --------------------------------------------------------------------------------------------
# The node
# --------------------------------------------------------------------------------------------


class Node:
    """A control plane plus controller-manager, scheduler, containerd and one kubelet."""

    def __init__(self, *, startup_timeout: float = 120.0, keep_workdir: bool = False) -> None:
        self.startup_timeout = startup_timeout
        self.keep_workdir = keep_workdir
        self.workdir: Path | None = None
        self.netns: NetworkNamespace | None = None
        self.cp: ControlPlane | None = None
        self.before: HostState | None = None
        self._tag = secrets.token_hex(3)
        self.cgroup_name = f"projectgen-{self._tag}"
        self._holder: _Process | None = None
        self._processes: list[_Process] = []
        self._created_cgroups: list[Path] = []
        self.netns_tag = ""
        """The random part of the names of our network namespace (pg-TAG) and host link (pghTAG)."""

    # -- paths ------------------------------------------------------------------------------

    def _wd(self) -> Path:
        if self.workdir is None:
            raise NodeError("node not started")
        return self.workdir

    @property
    def root_dir(self) -> Path:
        """The kubelet's --root-dir; Localhost seccomp profiles are read from its `seccomp/`."""
        return self._wd() / "root"

    @property
    def containerd_socket(self) -> Path:
        return self._wd() / "containerd" / "containerd.sock"

    @property
    def log_dir(self) -> Path:
        return self._wd() / "logs"

    @property
    def kubeconfig(self) -> Path:
        if self.cp is None:
            raise NodeError("node not started")
        return self.cp.kubeconfig

    @property
    def node_ip(self) -> str:
        if self.netns is None:
            raise NodeError("node not started")
        return self.netns.address

    def apiserver_env(self) -> dict[str, str]:
        """The container environment that points in-cluster clients at the apiserver (no kube-proxy)."""
        if self.cp is None:
            raise NodeError("node not started")
        return {
            "KUBERNETES_SERVICE_HOST": self.node_ip,
            "KUBERNETES_SERVICE_PORT": self.cp.url.rsplit(":", 1)[1],
        }

    def api_client(self) -> kubernetes.client.ApiClient:
        if self.cp is None:
            raise NodeError("node not started")
        return self.cp.api_client()

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self.workdir is not None:
            raise NodeError("node already started")
        reason = unavailable()
        if reason is not None:
            raise NodeError(reason)
        cp_bin = find_binaries()
        node_bin = find_node_binaries()
        ensure_tools()
        started = time.monotonic()
        self.before = HostState.snapshot()
        self.workdir = Path(tempfile.mkdtemp(prefix="projectgen-node-"))
        try:
            self.log_dir.mkdir()
            self.netns = NetworkNamespace()
            self.netns.create()
            self.netns_tag = self.netns.name.removeprefix("pg-")
            pki = self._wd() / "pki"
            pki.mkdir(mode=0o700)
            kubelet_ca = CertificateAuthority(pki, "kubelet-client-ca")
            # system:masters: the apiserver may use every kubelet API (logs, exec, port-forward)
            apiserver_client = kubelet_ca.issue(
                "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)
            )
            self.cp = ControlPlane(
                cp_bin,
                netns=self.netns,
                startup_timeout=self.startup_timeout,
                apiserver_args={
                    # Pods get their ServiceAccount token volume (ControlPlane alone has no SAs to mount)
                    "--disable-admission-plugins": None,
                    "--kubelet-client-certificate": str(apiserver_client.cert),
                    "--kubelet-client-key": str(apiserver_client.key),
                    "--kubelet-preferred-address-types": "InternalIP",
                },
            )
            self.cp.start()
            self._start_holder()
            self._start_controllers(node_bin)
            self._start_containerd()
            self.load_image(write_pause_archive(node_bin / "pause", self._wd() / "pause.tar"))
            self._start_kubelet(node_bin, kubelet_ca.cert)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        _log(
            f"node {NODE_NAME} Ready at {self.node_ip} in {time.monotonic() - started:.1f}s (logs in {self.log_dir})"
        )

    def _in_node(self, argv: Sequence[str]) -> list[str]:
        """``argv`` in the node's network and mount namespaces (nsenter execs: same PID)."""
        if self._holder is None or self._holder.popen is None:
            raise NodeError("node namespaces not made")
        pid = self._holder.popen.pid
        return ["nsenter", f"--target={pid}", "--mount", "--net", "--", *argv]

    def _start_holder(self) -> None:
        """A process holding the node's mount namespace (a slave of the host's) in our netns.

        Inside it a tmpfs covers /run/netns: the pods' network namespaces (containerd puts them
        there, at a fixed path) never show on the host and vanish with the mount namespace."""
        assert self.netns is not None
        self._holder = _Process(
            "namespace-holder",
            [
                *("unshare", "--mount", "--propagation", "slave", "--"),
                *("nsenter", f"--net=/run/netns/{self.netns.name}", "--"),
                *(
                    "sh",
                    "-c",
                    "mount -t tmpfs -o mode=0755 projectgen-netns /run/netns && exec sleep infinity",
                ),
            ],
            self.log_dir / "holder.log",
        )
        self._holder.start()
        deadline = time.monotonic() + 10
        pid = self._holder.popen.pid if self._holder.popen else 0
        while os.readlink(f"/proc/{pid}/exe") != os.path.realpath(shutil.which("sleep") or "/bin/sleep"):
            self._holder.check_alive()
            if time.monotonic() > deadline:
                raise NodeError("the namespace holder did not start")
            time.sleep(0.02)

    def _spawn(self, name: str, argv: Sequence[str]) -> _Process:
        process = _Process(name, argv, self.log_dir / f"{name}.log")
        process.start()
        self._processes.append(process)
        return process

    def _start_controllers(self, bin_dir: Path) -> None:
        assert self.cp is not None
        kubeconfig = str(self.cp.kubeconfig)
        self._spawn(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--root-ca-file={self.cp.ca_file}",
                f"--service-account-private-key-file={self.cp.cert_dir / 'sa.key'}",
                f"--cluster-name={NODE_NAME}",
                "--bind-address=127.0.0.1",
                f"--secure-port={_free_ports(1)[0]}",
                "--concurrent-gc-syncs=5",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={_free_ports(1)[0]}",
            ],
        )

    def _start_containerd(self) -> None:
        wd = self._wd() / "containerd"
        cni = self._wd() / "cni"
        for d in (wd / "root", wd / "state", cni / "net.d", cni / "ipam"):
            d.mkdir(parents=True)
        (cni / "net.d" / "10-projectgen.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "projectgen",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "pgbr0",
                            "isDefaultGateway": True,  # the route to the node IP (the apiserver)
                            "ipMasq": False,  # nothing leaves the namespace: no NAT rules on anything
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_CIDR}]],
                                "dataDir": str(cni / "ipam"),
                            },
                        }
                    ],
                }
            )
        )
        cni_bin = next(
            (p for p in ("/usr/lib/cni", "/opt/cni/bin") if Path(p, "bridge").is_file()), "/usr/lib/cni"
        )
        config = f"""version = 2
root = "{wd / "root"}"
state = "{wd / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{wd / "containerd-ttrpc.sock"}"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{wd / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  enable_selinux = false
  # root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj (the sandbox asks for -998)
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{wd / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni / "net.d"}"
"""
        (wd / "config.toml").write_text(config)
        process = self._spawn("containerd", self._in_node(["containerd", f"--config={wd / 'config.toml'}"]))
        deadline = time.monotonic() + 30
        while (
            _run(["ctr", f"--address={self.containerd_socket}", "version"], check=False, timeout=10).count(
                "Server"
            )
            == 0
        ):
            process.check_alive()
            if time.monotonic() > deadline:
                raise NodeError(
                    f"containerd did not answer on {self.containerd_socket}:\n{_tail(process.log_path)}"
                )
            time.sleep(0.2)

    def load_image(self, archive: Path) -> None:
        """Import an image archive (OCI or docker-archive) into containerd's CRI namespace."""
        _run(
            [
                "ctr",
                f"--address={self.containerd_socket}",
                "-n",
                "k8s.io",
                "images",
                "import",
                "--no-unpack=false",
                str(archive),
            ],
            timeout=300,
        )

    def images(self) -> list[str]:
        out = _run(["ctr", f"--address={self.containerd_socket}", "-n", "k8s.io", "images", "list", "-q"])
        return out.split()

    def _make_cgroup_root(self) -> None:
        for hierarchy in _cgroup_hierarchies():
            path = hierarchy / self.cgroup_name
            path.mkdir()
            self._created_cgroups.append(path)
            for name in ("cpuset.cpus", "cpuset.mems"):  # an empty cpuset takes no process
                if (path / name).is_file():
                    (path / name).write_text((hierarchy / name).read_text())

    def _start_kubelet(self, bin_dir: Path, client_ca: Path) -> None:
        assert self.cp is not None
        wd = self._wd() / "kubelet"
        wd.mkdir()
        self._make_cgroup_root()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.node_ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(client_ca)},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup_name}",
            "failSwapOn": False,
            "failCgroupV1": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "resolvConf": "/etc/resolv.conf",
            # a test machine's disk and memory: never evict nor collect the images we loaded
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusReportFrequency": "10s",
            "volumeStatsAggPeriod": "0s",
        }
        (wd / "config.yaml").write_text(yaml.safe_dump(config))
        self._spawn(
            "kubelet",
            self._in_node(
                [
                    str(bin_dir / "kubelet"),
                    f"--config={wd / 'config.yaml'}",
                    f"--kubeconfig={self.cp.kubeconfig}",
                    f"--root-dir={self.root_dir}",
                    f"--cert-dir={wd / 'pki'}",
                    f"--node-ip={self.node_ip}",
                    f"--hostname-override={NODE_NAME}",
                    "--v=1",
                ]
            ),
        )

    def _wait_ready(self) -> None:
        assert self.cp is not None
        deadline = time.monotonic() + self.startup_timeout
        last = ""
        with self.cp.api_client() as client:
            core = kubernetes.client.CoreV1Api(client)
            while True:
                for process in self._processes:
                    process.check_alive()
                try:
                    node = core.read_node(NODE_NAME)
                    ready = [
                        c
                        for c in (node.status.conditions if node.status else None) or []
                        if c.type == "Ready"
                    ]
                    if ready and ready[0].status == "True":
                        sa = core.list_namespaced_service_account("default").items
                        if any(s.metadata is not None and s.metadata.name == "default" for s in sa):
                            return
                        last = "no default ServiceAccount yet"
                    else:
                        last = str(ready[0].message if ready else "no Ready condition")
                except kubernetes.client.ApiException as exc:
                    last = f"HTTP {exc.status}"
                if time.monotonic() > deadline:
                    kubelet = self.log_dir / "kubelet.log"
                    raise NodeError(
                        f"node not Ready after {self.startup_timeout:.0f}s ({last}):\n{_tail(kubelet)}"
                    )
                time.sleep(0.5)

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        return _run(["kubectl", f"--kubeconfig={self.kubeconfig}", *args], check=check, timeout=timeout)

    def rss(self) -> dict[str, int]:
        """Resident memory (bytes) of each component and of the pods' processes, for the record."""
        found: dict[str, int] = {}
        named = [(p.name, p.popen.pid) for p in self._processes if p.popen is not None]
        if self.cp is not None:
            for name, proc in (("etcd", self.cp._etcd), ("kube-apiserver", self.cp._apiserver)):
                if proc is not None and proc.popen is not None:
                    named.append((name, proc.popen.pid))
        named += [("containerd-shims", pid) for pid in self._shim_pids()]
        named += [("pods", pid) for pid in self._pids_in_cgroups()]
        for name, pid in named:
            with contextlib.suppress(OSError, ValueError, IndexError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        found[name] = found.get(name, 0) + int(line.split()[1]) * 1024
        return found

    # -- stop -------------------------------------------------------------------------------

    def _pids_in_cgroups(self) -> set[int]:
        pids: set[int] = set()
        for root in self._created_cgroups:
            # os.walk, not rglob: a pod's cgroup may vanish mid-walk (os.walk skips it, rglob raises)
            for directory, _, names in os.walk(root):
                if "cgroup.procs" in names:
                    with contextlib.suppress(OSError, ValueError):
                        pids.update(int(p) for p in Path(directory, "cgroup.procs").read_text().split())
        return pids

    def _shim_pids(self) -> set[int]:
        """containerd-shim processes of *our* containerd (their command line names our socket)."""
        if self.workdir is None:
            return set()
        needle = str(self.containerd_socket).encode()
        pids = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    cmdline = (entry / "cmdline").read_bytes()
                    if b"containerd-shim" in cmdline and needle in cmdline:
                        pids.add(int(entry.name))
        return pids

    @staticmethod
    def _kill(pids: set[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop everything in reverse order, remove what was made, restore the sysctls. Idempotent."""
        errors: list[str] = []

        def attempt(what: str, fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:
                errors.append(f"{what}: {exc}")

        kubelet = next((p for p in self._processes if p.name == "kubelet"), None)
        if kubelet is not None:
            attempt("kubelet", kubelet.stop)
        # the containers (every process in our cgroups), then the shims, by PID
        for _ in range(20):
            pids = self._pids_in_cgroups() | self._shim_pids()
            if not pids:
                break
            self._kill(pids)
            time.sleep(0.1)
        for process in reversed(self._processes):
            attempt(process.name, process.stop)
        self._processes.clear()
        if self._holder is not None:
            attempt("holder", self._holder.stop)
            self._holder = None
        if self.cp is not None:
            attempt("control plane", self.cp.stop)
            self.cp = None
        if self.netns is not None:
            attempt("netns", _delete_netns, self.netns)
            self.netns = None
        for root in reversed(self._created_cgroups):
            attempt(f"cgroup {root}", _remove_cgroup, root)
        self._created_cgroups.clear()
        if self.before is not None:
            attempt("sysctls", self.before.restore_sysctls)
        workdir, self.workdir = self.workdir, None
        if workdir is not None:
            for mount in reversed(_mounts()):  # none expected: the node's mounts were in its namespace
                if mount.startswith(str(workdir)):
                    subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
            if self.keep_workdir:
                _log(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        if errors:
            _log("while stopping: " + "; ".join(errors))


def _delete_netns(ns: NetworkNamespace) -> None:
    """Delete the namespace; retried while a dying process of ours still holds its mount."""
    name = ns.name
    deadline = time.monotonic() + 10
    while True:
        ns.name = name
        ns.delete()
        if not Path("/run/netns", name).exists():
            return
        if time.monotonic() > deadline:
            raise NodeError(f"network namespace {name} could not be deleted")
        time.sleep(0.2)


def _remove_cgroup(root: Path) -> None:
    """rmdir a cgroup tree, deepest first (cgroup directories hold only kernel files)."""
    if not root.exists():
        return
    dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    deadline = time.monotonic() + 10
    for d in [*dirs, root]:
        while True:
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def ensure() -> int:
    """Find or build everything a node needs; print where. For `make node`."""
    try:
        ensure_tools()
        _log(f"binaries: {find_node_binaries()}")
    except ControlPlaneError as exc:
        _log(f"error: {exc}")
        return 1
    return 0


def serve(crds: Path | None = None, policies: Path | None = None) -> int:
    """Run a control plane with one node until SIGINT/SIGTERM; print ``export KUBECONFIG=...``.

    Returns the exit code (0 on a requested stop, 1 if a component died or could not start).
    """
    try:
        with _stop_signals() as stop, Node() as node:
            assert node.cp is not None
            if crds is not None:
                node.cp.install(crds, policies)
            print(f"export KUBECONFIG={node.kubeconfig}", flush=True)
            env = " ".join(f"{k}={v}" for k, v in node.apiserver_env().items())
            _log(f"logs in {node.log_dir}; in-cluster clients need {env} (no kube-proxy); Ctrl-C to stop")
            while not stop.wait(0.5):
                dead = [p.name for p in node._processes if not p.running]
                if dead or not (node.cp.apiserver_running and node.cp.etcd_running):
                    _log(f"a component exited unexpectedly: {dead or 'control plane'}")
                    return 1
            _log("stopping")
    except ControlPlaneError as exc:
        _log(f"error: {exc}")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--ensure"]:
        return ensure()
    print(
        "usage: python -m projectgen_dev.node --ensure  (run a cluster: python -m projectgen_dev controlplane --node)"
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
