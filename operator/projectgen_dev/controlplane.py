"""A local Kubernetes control plane (etcd + kube-apiserver) for tests and demos.

No kube-controller-manager, scheduler or kubelet runs: there is no garbage collection of
ownerReferences, namespaces never finish terminating and pods never run. What works is
everything the apiserver does on its own: CRUD, RBAC, CRDs, admission, TokenRequest.

Binaries are looked up with :func:`find_binaries` (``KUBEBUILDER_ASSETS``, then ``PATH``, then a
per-user cache that is filled by ``hack/build-controlplane.sh`` from the Go module proxy).

Usage::

    with ControlPlane() as cp:
        cp.install(Path("crds"), Path("manifests/created-by"))  # CRDs, policies, then admissible
        api = kubernetes.client.CoreV1Api(cp.api_client())

or from a shell: ``python -m projectgen_dev.controlplane [--crds DIR] [--policies DIR]``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import kubernetes.client
import yaml
from kubernetes.client.exceptions import ApiException

from projectgen.kubeversion import KubeVersion
from projectgen_dev import buildcache
from projectgen_dev.netns import NetworkNamespace
from projectgen_dev.pki import CertificateAuthority, KeyPair

KUBE_VERSIONS = {"v1.37.2": "v3.7.0", "v1.36.3": "v3.6.8", "v1.35.4": "v3.6.6"}
"""The one place where the control-plane versions are pinned: the newest patch of each supported minor
(projectgen.kubeversion), newest first, each with the etcd its kubernetes' build/dependencies.yaml names.
The first is the default; ``PROJECTGEN_KUBE_VERSION`` picks another, as kubebuilder's envtest version."""
KUBE_VERSION_ENV = "PROJECTGEN_KUBE_VERSION"


def selected_version(wanted: str | None = None) -> str:
    """The pinned version that ``wanted`` (default ``$PROJECTGEN_KUBE_VERSION``) names: a full version
    (``v1.36.3``) or a minor (``1.36``); the default when unset."""
    wanted = (os.environ.get(KUBE_VERSION_ENV, "") if wanted is None else wanted).strip()
    if not wanted:
        return next(iter(KUBE_VERSIONS))
    normalised = wanted if wanted.startswith("v") else f"v{wanted}"
    for version in KUBE_VERSIONS:
        if normalised in (version, version.rpartition(".")[0]):
            return version
    raise ValueError(
        f"{KUBE_VERSION_ENV}={wanted} is not one of the pinned versions {', '.join(KUBE_VERSIONS)} "
        f"(or their minors)"
    )


K8S_VERSION = selected_version()
ETCD_VERSION = KUBE_VERSIONS[K8S_VERSION]
DEFAULT_K8S_VERSION = next(iter(KUBE_VERSIONS))

BINARIES = ("kube-apiserver", "etcd")
ADMIN_USER = "projectgen-admin"
# The benchmarking range (RFC 2544), never a private one: a ClusterIP is an address something will dial.
SERVICE_CIDR = "198.19.0.0/24"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

_LOOPBACK = "127.0.0.1"
FRONT_PROXY_CLIENT = "front-proxy-client"
"""The CN of the client certificate the aggregator presents to extension API servers."""
_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or used."""


class BinariesNotFoundError(ControlPlaneError):
    """kube-apiserver/etcd could not be found nor built."""


def _log(message: str) -> None:
    print(f"[controlplane] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/projectgen/bin/<K8S_VERSION>/`` (may not exist yet)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "projectgen" / "bin" / K8S_VERSION


def build_script() -> Path | None:
    """``hack/build-controlplane.sh`` of the source checkout, None when not installed from one."""
    script = Path(__file__).resolve().parents[2] / "hack" / "build-controlplane.sh"
    return script if script.is_file() else None


def _has_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) and (directory / name).is_file() for name in BINARIES)


def find_binaries() -> Path:
    """Return the directory holding ``kube-apiserver`` and ``etcd``.

    Order: ``$KUBEBUILDER_ASSETS``; both on ``PATH`` (same directory); the cache directory,
    built into with ``hack/build-controlplane.sh`` when missing (minutes the first time, progress
    on stderr; a file lock serialises concurrent builders).
    Raises :class:`BinariesNotFoundError` when none of that works.
    """
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        directory = Path(assets).expanduser()
        if not _has_binaries(directory):
            raise BinariesNotFoundError(
                f"KUBEBUILDER_ASSETS={assets} does not contain executable {' and '.join(BINARIES)}"
            )
        return directory

    found = [shutil.which(name) for name in BINARIES]
    if all(found):
        parents = {Path(p).resolve().parent for p in found if p}
        if len(parents) == 1:
            return parents.pop()
        _log(f"{' and '.join(BINARIES)} are on PATH but in different directories; using the cache")

    target = cache_dir()
    if _cache_complete(target):
        return target
    return _build_binaries(target)


def apiserver_version(bin_dir: Path) -> KubeVersion:
    """The version ``bin_dir/kube-apiserver --version`` prints (``Kubernetes v1.37.2``)."""
    proc = subprocess.run(
        [str(bin_dir / "kube-apiserver"), "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    try:
        return KubeVersion.parse(proc.stdout.strip().removeprefix("Kubernetes "))
    except ValueError:
        raise ControlPlaneError(
            f"{bin_dir / 'kube-apiserver'} --version printed {proc.stdout.strip()!r} {proc.stderr.strip()!r}"
        ) from None


def binaries_version() -> KubeVersion:
    """The version the control plane runs: ``$KUBEBUILDER_ASSETS``' kube-apiserver's, else the selected pin."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    return apiserver_version(Path(assets).expanduser()) if assets else KubeVersion.parse(K8S_VERSION)


def _cache_complete(directory: Path) -> bool:
    """Both binaries, and the VERSIONS stamp written by the build script matches the pins."""
    try:
        stamp = (directory / "VERSIONS").read_text()
    except OSError:
        return False
    return _has_binaries(directory) and stamp == f"kube-apiserver {K8S_VERSION}\netcd {ETCD_VERSION}\n"


def _build_binaries(target: Path) -> Path:
    script = build_script()
    if script is None:
        raise BinariesNotFoundError(
            f"kube-apiserver and etcd not found (set KUBEBUILDER_ASSETS, put them on PATH, or put them in "
            f"{target}); hack/build-controlplane.sh is only available in a source checkout"
        )
    if shutil.which("go") is None:
        raise BinariesNotFoundError(
            f"kube-apiserver and etcd not found and `go` is not on PATH to build them into {target} "
            f"(set KUBEBUILDER_ASSETS or put the binaries on PATH)"
        )
    buildcache.build_once(
        target.parent / f".{target.name}.lock",
        lambda: _cache_complete(target),
        ["bash", str(script), str(target), K8S_VERSION, ETCD_VERSION],
        what=f"kube-apiserver {K8S_VERSION} and etcd {ETCD_VERSION} into {target}",
        error=BinariesNotFoundError,
        log=_log,
    )
    return target


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all sockets held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((_LOOPBACK, 0))
            ports.append(sock.getsockname()[1])
        return ports


def _write_private(path: Path, data: str | bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def _generate_rsa_key(path: Path) -> None:
    """Write a PEM RSA private key (service-account signing key) to ``path``."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        if shutil.which("openssl") is None:
            raise ControlPlaneError(
                "neither the `cryptography` package nor the `openssl` CLI is available "
                "to generate the service-account key"
            ) from None
        subprocess.run(
            [
                "openssl",
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                str(path),
            ],
            check=True,
            capture_output=True,
        )
        path.chmod(0o600)
        return
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    _write_private(path, pem)


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn making the child get SIGKILL when its parent dies (Linux only).

    The libc lookup happens here, in the parent: the child only makes the system call.
    """
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class _Process:
    """A child process with its log file, stoppable with SIGTERM then SIGKILL."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"\n===== {time.strftime('%H:%M:%S')} starting {self.name} =====\n".encode())
            log.flush()
            # PDEATHSIG is tied to the forking *thread*: only use it from the main thread, where
            # it makes sure nothing outlives a killed test run (pytest-timeout's os._exit, SIGKILL).
            main_thread = threading.current_thread() is threading.main_thread()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches us only; we stop in order
                preexec_fn=_pdeathsig_preexec() if main_thread else None,
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds (at once if interrupted); reap it."""
        popen = self.popen
        if popen is None:
            return
        try:
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    popen.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout)
        finally:
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    popen.kill()
                popen.wait()
            self.popen = None

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise ControlPlaneError(
                f"{self.name} exited with code {self.popen.returncode}; last lines of {self.log_path}:\n"
                f"{_tail(self.log_path)}"
            )


# --------------------------------------------------------------------------------------------
# The control plane
# --------------------------------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver on free loopback ports, state in a temporary directory.

    Ports, data, certificates and credentials are fixed by :meth:`start`: the processes can be
    stopped and started again (:meth:`stop_apiserver`/:meth:`start_apiserver`,
    :meth:`stop_etcd`/:meth:`start_etcd`) and keep their addresses and data.

    The aggregation layer is always configured, as kubeadm does: a requestheader CA, the front
    proxy's client certificate (:attr:`front_proxy`) and routing to endpoints, so an APIService
    reaches the address in its Service's EndpointSlice. Users other than the admin token come from
    :meth:`user_kubeconfig` (client certificates of the client CA).

    ``netns``: run etcd and kube-apiserver inside that network namespace, on its non-loopback
    address (EndpointSlices refuse loopback ones, so an extension server must have a real address).
    ``admission_policy=False``: MutatingAdmissionPolicy switched off (1.36 and newer serve it by
    default; 1.35 never does here: it is beta there and off, as on the clusters that run it).
    ``apiserver_args``: kube-apiserver flags (``"--name"``) that replace the default's value, or are
    added; ``None`` drops a default flag (:mod:`projectgen_dev.node` re-enables the ServiceAccount
    admission plugin and gives the apiserver a kubelet client certificate this way).
    """

    def __init__(
        self,
        bin_dir: Path | None = None,
        *,
        startup_timeout: float = 60.0,
        keep_workdir: bool = False,
        netns: NetworkNamespace | None = None,
        admission_policy: bool = True,
        apiserver_args: Mapping[str, str | None] | None = None,
    ) -> None:
        self._bin_dir = bin_dir
        self.apiserver_args = dict(apiserver_args or {})
        self.netns = netns
        self.admission_policy = admission_policy
        self._client_ca: CertificateAuthority | None = None
        self._front_proxy: KeyPair | None = None
        self.front_proxy_ca_pem = b""
        """The requestheader CA (PEM) that signs :attr:`front_proxy`."""
        self.startup_timeout = startup_timeout
        self.keep_workdir = keep_workdir
        self.workdir: Path | None = None
        self._token = secrets.token_urlsafe(32)
        self._etcd: _Process | None = None
        self._apiserver: _Process | None = None
        self._etcd_client_port = 0
        self._etcd_peer_port = 0
        self._apiserver_port = 0
        self._atexit_registered = False
        self._installed = False

    # -- properties -------------------------------------------------------------------------

    def _require_workdir(self) -> Path:
        if self.workdir is None:
            raise ControlPlaneError("control plane not started")
        return self.workdir

    @property
    def url(self) -> str:
        """``https://<host>:<port>`` of the kube-apiserver."""
        self._require_workdir()
        return f"https://{self.host}:{self._apiserver_port}"

    @property
    def host(self) -> str:
        """Where the processes listen: 127.0.0.1, or the network namespace's address."""
        return self.netns.address if self.netns is not None else _LOOPBACK

    @property
    def etcd_url(self) -> str:
        self._require_workdir()
        return f"http://{self.host}:{self._etcd_client_port}"

    @property
    def token(self) -> str:
        """Bearer token of the admin user (group ``system:masters``)."""
        return self._token

    @property
    def kubeconfig(self) -> Path:
        return self._require_workdir() / "kubeconfig"

    @property
    def log_dir(self) -> Path:
        return self._require_workdir() / "logs"

    @property
    def cert_dir(self) -> Path:
        return self._require_workdir() / "pki"

    @property
    def ca_file(self) -> Path | None:
        """The apiserver's self-signed serving certificate bundle (leaf + its CA), once generated."""
        path = self.cert_dir / "apiserver.crt"
        return path if path.is_file() else None

    @property
    def front_proxy(self) -> KeyPair:
        """The aggregator's client certificate (CN ``front-proxy-client``), signed by the
        requestheader CA that kube-apiserver publishes in ``kube-system/extension-apiserver-authentication``."""
        if self._front_proxy is None:
            raise ControlPlaneError("control plane not started")
        return self._front_proxy

    @property
    def etcd_log(self) -> Path:
        return self.log_dir / "etcd.log"

    @property
    def apiserver_log(self) -> Path:
        return self.log_dir / "kube-apiserver.log"

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start etcd and kube-apiserver, wait until ready and write :attr:`kubeconfig`."""
        if self.workdir is not None:
            raise ControlPlaneError("control plane already started")
        bin_dir = self._bin_dir or find_binaries()
        started = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="projectgen-cp-"))
        atexit.register(self.stop)
        self._atexit_registered = True
        try:
            self._prepare(bin_dir)
            self.start_etcd()
            self.start_apiserver()
            self._write_kubeconfig()
        except BaseException:
            self.stop()
            raise
        _log(f"ready at {self.url} in {time.monotonic() - started:.1f}s (logs in {self.log_dir})")

    def _prepare(self, bin_dir: Path) -> None:
        workdir = self._require_workdir()
        self.log_dir.mkdir()
        self.cert_dir.mkdir(mode=0o700)
        (workdir / "etcd").mkdir(mode=0o700)
        self._etcd_client_port, self._etcd_peer_port, self._apiserver_port = _free_ports(3)

        token_file = workdir / "tokens.csv"
        _write_private(token_file, f'{self._token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        sa_key = self.cert_dir / "sa.key"
        _generate_rsa_key(sa_key)
        self._client_ca = CertificateAuthority(self.cert_dir, "client-ca")
        front_proxy_ca = CertificateAuthority(self.cert_dir, "front-proxy-ca")
        self._front_proxy = front_proxy_ca.issue(FRONT_PROXY_CLIENT, FRONT_PROXY_CLIENT)
        self.front_proxy_ca_pem = front_proxy_ca.pem
        wrap = self.netns.wrap if self.netns is not None else list
        # createdBy: an in-tree MutatingAdmissionPolicy stamps the requesting user. GA and on from
        # 1.36; off in 1.35 (beta), as there. Switched off on request, as a cluster that lacks it.
        version = apiserver_version(bin_dir)
        admission_policy = (
            [
                "--feature-gates=MutatingAdmissionPolicy=false",
                "--runtime-config=admissionregistration.k8s.io/v1/mutatingadmissionpolicies=false,"
                "admissionregistration.k8s.io/v1/mutatingadmissionpolicybindings=false",
            ]
            if not self.admission_policy and version.serves_mutating_admission_policy
            else []
        )

        peer = f"http://{_LOOPBACK}:{self._etcd_peer_port}"
        self._etcd = _Process(
            "etcd",
            wrap(
                [
                    str(bin_dir / "etcd"),
                    "--name=default",
                    f"--data-dir={workdir / 'etcd'}",
                    f"--listen-client-urls={self.etcd_url}",
                    f"--advertise-client-urls={self.etcd_url}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=default={peer}",
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ]
            ),
            self.etcd_log,
        )
        self._apiserver = _Process(
            "kube-apiserver",
            wrap(
                [
                    str(bin_dir / "kube-apiserver"),
                    f"--etcd-servers={self.etcd_url}",
                    f"--bind-address={self.host}",
                    f"--advertise-address={self.host}",
                    f"--secure-port={self._apiserver_port}",
                    f"--cert-dir={self.cert_dir}",
                    f"--token-auth-file={token_file}",
                    "--authorization-mode=RBAC",
                    "--disable-admission-plugins=ServiceAccount",
                    f"--service-account-issuer={SA_ISSUER}",
                    f"--service-account-key-file={sa_key}",
                    f"--service-account-signing-key-file={sa_key}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--allow-privileged=true",
                    "--profiling=false",
                    f"--client-ca-file={self._client_ca.cert}",
                    # The aggregation layer (kubeadm's flags): who the front proxy is, and its identity.
                    f"--requestheader-client-ca-file={front_proxy_ca.cert}",
                    f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                    "--requestheader-username-headers=X-Remote-User",
                    "--requestheader-group-headers=X-Remote-Group",
                    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                    f"--proxy-client-cert-file={self._front_proxy.cert}",
                    f"--proxy-client-key-file={self._front_proxy.key}",
                    "--enable-aggregator-routing=true",  # no kube-proxy: dial the EndpointSlice's address
                    *admission_policy,
                    # From 1.37 the `kubernetes` Service's endpoint reconciler refuses a loopback address
                    # (it would be an endpoint nothing else can dial); in a namespace it has a real one.
                    *(["--endpoint-reconciler-type=none"] if self.netns is None else []),
                ]
            ),
            self.apiserver_log,
        )
        self._apiserver.argv = _override_flags(self._apiserver.argv, self.apiserver_args)

    def stop(self) -> None:
        """Stop both processes (apiserver first) and remove the temporary directory. Idempotent."""
        try:
            if self._apiserver is not None:
                self._apiserver.stop()
        finally:
            try:
                if self._etcd is not None:
                    self._etcd.stop()
            finally:
                if self._atexit_registered:
                    atexit.unregister(self.stop)
                    self._atexit_registered = False
                workdir, self.workdir = self.workdir, None
                self._apiserver = self._etcd = None
                if workdir is not None:
                    if self.keep_workdir:
                        _log(f"kept {workdir}")
                    else:
                        shutil.rmtree(workdir, ignore_errors=True)

    def start_etcd(self) -> None:
        """(Re)start etcd with the same ports and data and wait until it is healthy."""
        if self._etcd is None:
            raise ControlPlaneError("control plane not started")
        if self._etcd.running:
            return
        self._etcd.start()
        self._wait(self._etcd, self._etcd_healthy, "etcd /health")

    def stop_etcd(self, timeout: float = 10.0) -> None:
        """Stop etcd (SIGTERM, SIGKILL after ``timeout``; 0 simulates a crash); data and ports are kept.

        With the apiserver connected etcd takes up to ~7s to stop gracefully (open watches).
        """
        if self._etcd is not None:
            self._etcd.stop(timeout)

    def start_apiserver(self) -> None:
        """(Re)start kube-apiserver with the same port, certificates and data; wait for /readyz."""
        if self._apiserver is None:
            raise ControlPlaneError("control plane not started")
        if self._apiserver.running:
            return
        self._apiserver.start()
        self._wait(self._apiserver, self._apiserver_ready, "kube-apiserver /readyz")
        if self._installed:  # a restart: /readyz comes before the CRDs are served and admitted again
            with self.api_client() as client:  # dry runs only: objects of a running test stay untouched
                wait_admissible(client, created_by=False, timeout=self.startup_timeout)

    def stop_apiserver(self, timeout: float = 10.0) -> None:
        """Stop kube-apiserver (SIGTERM, SIGKILL after ``timeout``; 0 simulates a crash).

        etcd keeps running; a graceful stop takes about a second.
        """
        if self._apiserver is not None:
            self._apiserver.stop(timeout)

    @property
    def apiserver_running(self) -> bool:
        return self._apiserver is not None and self._apiserver.running

    @property
    def etcd_running(self) -> bool:
        return self._etcd is not None and self._etcd.running

    # -- readiness --------------------------------------------------------------------------

    def _wait(self, process: _Process, probe: Any, what: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last = ""
        while True:
            process.check_alive()
            try:
                ok, last = probe()
            except (OSError, urllib.error.URLError) as exc:
                ok, last = False, str(exc)
            if ok:
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"timed out after {self.startup_timeout:.0f}s waiting for {what} (last: {last}); "
                    f"last lines of {process.log_path}:\n{_tail(process.log_path)}"
                )
            time.sleep(0.1)

    def _etcd_healthy(self) -> tuple[bool, str]:
        with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as resp:  # noqa: S310
            body = resp.read().decode()
        return json.loads(body).get("health") == "true", body

    def _apiserver_ready(self) -> tuple[bool, str]:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the certificate may not exist before the first start
        request = urllib.request.Request(  # noqa: S310
            f"{self.url}/readyz", headers={"Authorization": f"Bearer {self._token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as resp:  # noqa: S310
                return resp.status == 200, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return False, f"HTTP {exc.code}: {exc.read().decode(errors='replace')[-300:]}"

    # -- clients ----------------------------------------------------------------------------

    def _kubeconfig(self, user: str, credentials: dict[str, str], path: Path) -> Path:
        cluster: dict[str, Any] = {"server": self.url}
        ca = self.ca_file
        if ca is not None:
            cluster["certificate-authority"] = str(ca)
        else:
            cluster["insecure-skip-tls-verify"] = True
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "projectgen", "cluster": cluster}],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": "projectgen", "context": {"cluster": "projectgen", "user": user}}],
            "current-context": "projectgen",
        }
        _write_private(path, yaml.safe_dump(config, sort_keys=False))
        return path

    def _write_kubeconfig(self) -> None:
        self._kubeconfig(ADMIN_USER, {"token": self._token}, self.kubeconfig)

    def _configuration(self) -> kubernetes.client.Configuration:
        cfg = kubernetes.client.Configuration()
        cfg.host = self.url
        ca = self.ca_file
        if ca is not None:
            cfg.ssl_ca_cert = str(ca)
        else:
            cfg.verify_ssl = False
        return cfg

    def configuration(self, token: str | None = None) -> kubernetes.client.Configuration:
        """A client configuration for this apiserver, as admin or with another bearer ``token``."""
        cfg = self._configuration()
        cfg.api_key = {"authorization": f"Bearer {self._token if token is None else token}"}
        return cfg

    def api_client(self, token: str | None = None) -> kubernetes.client.ApiClient:
        """A new ApiClient for the admin user (or for another bearer ``token``)."""
        return kubernetes.client.ApiClient(self.configuration(token))

    def user_credentials(self, user: str, groups: Sequence[str] = ()) -> KeyPair:
        """A client certificate for ``user`` in ``groups`` (plus system:authenticated), as
        kube-apiserver authenticates it: CN is the user name, each O a group."""
        if self._client_ca is None:
            raise ControlPlaneError("control plane not started")
        return self._client_ca.issue(f"user-{user}", user, tuple(groups))

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig file for ``user`` (client certificate), next to the admin's."""
        pair = self.user_credentials(user, groups)
        credentials = {"client-certificate": str(pair.cert), "client-key": str(pair.key)}
        return self._kubeconfig(user, credentials, self._require_workdir() / f"kubeconfig-{user}")

    def user_configuration(self, user: str, groups: Sequence[str] = ()) -> kubernetes.client.Configuration:
        """A client configuration for ``user`` (client certificate)."""
        pair = self.user_credentials(user, groups)
        cfg = self._configuration()
        cfg.cert_file, cfg.key_file = str(pair.cert), str(pair.key)
        return cfg

    # -- CRDs -------------------------------------------------------------------------------

    def install_crds(self, directory: Path, timeout: float = 30.0) -> list[str]:
        """Create or replace the CRDs of every ``*.yaml`` in ``directory``; wait until Established.

        Returns the names of the CRDs. Documents of kind Kustomization are ignored, other kinds
        are an error. A CRD the apiserver rejects raises :class:`ControlPlaneError` naming the
        file and the apiserver's reasons.
        """
        crds: list[tuple[Path, dict[str, Any]]] = []
        for path in sorted(Path(directory).glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc or doc.get("kind") == "Kustomization":
                    continue
                if doc.get("kind") != "CustomResourceDefinition":
                    raise ControlPlaneError(
                        f"{path}: expected CustomResourceDefinition, got {doc.get('kind')}"
                    )
                crds.append((path, doc))
        with self.api_client() as client:
            api = kubernetes.client.ApiextensionsV1Api(client)
            for path, crd in crds:
                try:
                    _create_or_replace_crd(api, crd)
                except ApiException as exc:
                    raise ControlPlaneError(
                        f"{path}: CRD {crd['metadata']['name']} rejected (HTTP {exc.status}):\n"
                        + _api_error_causes(exc)
                    ) from exc
            for _, crd in crds:
                _wait_crd_served(client, crd, timeout)
        return [crd["metadata"]["name"] for _, crd in crds]

    def install(self, crds: Path, policies: Path | None = None, timeout: float = 60.0) -> None:
        """Install the CRDs and (optionally) the createdBy admission policies of ``policies`` (a
        kustomize directory), then wait until both kinds can really be admitted.

        The one readiness rule of the demo, the test fixtures and `python -m projectgen_dev controlplane`.
        """
        self.install_crds(crds)
        if policies is not None:
            _kubectl(self.kubeconfig, "apply", "-k", str(policies))
        with self.api_client() as client:
            wait_admissible(client, created_by=policies is not None, timeout=timeout)
        self._installed = True


def _override_flags(argv: list[str], overrides: Mapping[str, str | None]) -> list[str]:
    """``argv`` with each ``--flag`` of ``overrides`` replaced (``None``: removed) or appended."""
    out = [a for a in argv if a.partition("=")[0] not in overrides]
    return out + [f"{flag}={value}" for flag, value in overrides.items() if value is not None]


# -- admission readiness ----------------------------------------------------------------------

CRD_NOT_READY = (
    "There can be a delay between when CustomResourceDefinitions are created and when they are available"
)
"""kube-apiserver's text for the 503 of a CRD whose schema the admission chain does not know yet.

Seen from MutatingAdmissionPolicy's dispatcher for a moment after the CRD is Established and in
discovery (k8s.io/apiserver/pkg/admission/plugin/policy/mutating/dispatcher.go, v0.34)."""

PROBE_NAMESPACE = "default"
_PROBE_NAME = "projectgen-admission-probe"


def is_crd_not_ready(status: int | None, text: str) -> bool:
    """True for the passing 503 a client should retry right after installing the CRDs."""
    return (status in (None, 503)) and CRD_NOT_READY in text


def admission_probes() -> list[tuple[str, dict[str, Any]]]:
    """One minimal object of each kind, as ``(plural, body)``, each with a forged createdBy."""
    meta = {
        "name": _PROBE_NAME,
        "namespace": PROBE_NAMESPACE,
        "annotations": {"projectgen.io/created-by": "forged"},
    }
    project = {
        "apiVersion": "projectgen.io/v1alpha1",
        "kind": "GeneratedProject",
        "metadata": dict(meta),
        "spec": {
            "projectRef": {"name": "probe"},
            "sources": [{"inline": {"files": [{"path": "a", "content": "a"}]}}],
        },
    }
    export = {
        "apiVersion": "projectgen.io/v1alpha1",
        "kind": "RepositoryExport",
        "metadata": dict(meta),
        "spec": {"generatedProjectRef": {"name": _PROBE_NAME}, "exportType": "zip"},
    }
    return [("generatedprojects", project), ("repositoryexports", export)]


def wait_admissible(client: kubernetes.client.ApiClient, *, created_by: bool, timeout: float = 60.0) -> None:
    """Wait until a server-side dry-run create of each kind succeeds and, with ``created_by``,
    until both createdBy policies act (the forged annotation is overwritten on create; a change
    is refused on update). Policies take effect a moment after they are created, and the admission
    chain learns a new CRD's schema a moment after it is Established."""
    custom = kubernetes.client.CustomObjectsApi(client)
    deadline = time.monotonic() + timeout
    last = ""

    def attempt(call: Callable[[], Any]) -> Any:
        nonlocal last
        while True:
            try:
                return call()
            except ApiException as exc:
                last = f"HTTP {exc.status}: {_api_error_causes(exc)}"
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"resources not admissible after {timeout:.0f}s (last: {last})")
            time.sleep(0.2)

    for plural, body in admission_probes():

        def dry_run(plural: str = plural, body: dict[str, Any] = body) -> Any:
            made: Any = custom.create_namespaced_custom_object(
                "projectgen.io", "v1alpha1", PROBE_NAMESPACE, plural, body, dry_run="All"
            )
            stamped = (made.get("metadata", {}).get("annotations") or {}).get("projectgen.io/created-by")
            if created_by and stamped == "forged":
                raise ApiException(status=0, reason="the createdBy policy does not act yet")
            return made

        attempt(dry_run)
    if not created_by:
        return
    plural, body = admission_probes()[0]
    attempt(
        lambda: _create_ignoring_conflict(custom, plural, body),
    )
    try:

        def change_refused() -> None:
            try:
                custom.patch_namespaced_custom_object(
                    "projectgen.io",
                    "v1alpha1",
                    PROBE_NAMESPACE,
                    plural,
                    _PROBE_NAME,
                    {"metadata": {"annotations": {"projectgen.io/created-by": "changed"}}},
                    dry_run="All",
                )
            except ApiException as exc:
                if exc.status in (400, 403, 422):
                    return
                raise
            raise ApiException(status=0, reason="the createdBy immutability policy does not act yet")

        attempt(change_refused)
    finally:
        with contextlib.suppress(ApiException):
            custom.delete_namespaced_custom_object(
                "projectgen.io", "v1alpha1", PROBE_NAMESPACE, plural, _PROBE_NAME
            )


def _create_ignoring_conflict(
    custom: kubernetes.client.CustomObjectsApi, plural: str, body: dict[str, Any]
) -> None:
    try:
        custom.create_namespaced_custom_object("projectgen.io", "v1alpha1", PROBE_NAMESPACE, plural, body)
    except ApiException as exc:
        if exc.status != 409:
            raise


def _kubectl(kubeconfig: Path, *args: str) -> str:
    proc = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        raise ControlPlaneError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _api_error_causes(exc: ApiException) -> str:
    """One line per cause of a Status error body (or the raw body)."""
    try:
        status = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return str(exc.body or exc.reason)
    causes = (status.get("details") or {}).get("causes") or []
    if not causes:
        return str(status.get("message", exc.body))
    return "\n".join(f"  {c.get('field', '')}: {c.get('message', '')}" for c in causes)


def _crd_model(crd: dict[str, Any]) -> kubernetes.client.V1CustomResourceDefinition:
    body = kubernetes.client.V1CustomResourceDefinition.from_dict(crd)
    if body is None:  # only for a None input
        raise ControlPlaneError("empty CRD")
    return body


def _create_or_replace_crd(api: kubernetes.client.ApiextensionsV1Api, crd: dict[str, Any]) -> None:
    try:
        api.create_custom_resource_definition(_crd_model(crd))
        return
    except ApiException as exc:
        if exc.status != 409:
            raise
    name = crd["metadata"]["name"]
    for _ in range(5):
        current = api.read_custom_resource_definition(name)
        version = current.metadata.resource_version if current.metadata else None
        body = _crd_model({**crd, "metadata": {**crd["metadata"], "resourceVersion": version}})
        try:
            api.replace_custom_resource_definition(name, body)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
    raise ControlPlaneError(f"could not replace CRD {name}: update conflicts")


def _wait_crd_served(client: kubernetes.client.ApiClient, crd: dict[str, Any], timeout: float) -> None:
    """Wait for condition Established and for every served version to be in discovery."""
    crds = kubernetes.client.ApiextensionsV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    name = crd["metadata"]["name"]
    group = crd["spec"]["group"]
    plural = crd["spec"]["names"]["plural"]
    versions = [v["name"] for v in crd["spec"].get("versions", []) if v.get("served", True)]

    def discovered(version: str) -> bool:
        try:
            resources = custom.get_api_resources(group, version)
        except ApiException:
            return False
        return any(r.name == plural for r in resources.resources or [])

    deadline = time.monotonic() + timeout
    while True:
        status = crds.read_custom_resource_definition(name).status
        conditions = (status.conditions if status else None) or []
        established = any(c.type == "Established" and c.status == "True" for c in conditions)
        if established and all(discovered(v) for v in versions):
            return
        if time.monotonic() > deadline:
            raise ControlPlaneError(
                f"CRD {name} not established after {timeout:.0f}s: "
                f"{[(c.type, c.status, c.message) for c in conditions]}"
            )
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """An Event set by SIGINT/SIGTERM while inside the block (handlers restored afterwards)."""
    event = threading.Event()

    def handler(signum: int, frame: object) -> None:
        event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def serve(crds: Path | None = None, out: IO[str] | None = None, policies: Path | None = None) -> int:
    """Run a control plane until SIGINT/SIGTERM; print ``export KUBECONFIG=...`` to ``out``.

    Returns the process exit code (0 on a requested stop, 1 if a component died).
    """
    out = out or sys.stdout
    try:
        bin_dir = find_binaries()
        with _stop_signals() as stop, ControlPlane(bin_dir) as cp:
            if crds is not None:
                cp.install(crds, policies)
                _log(
                    f"installed the CRDs of {crds}" + (f" and the policies of {policies}" if policies else "")
                )
            print(f"export KUBECONFIG={cp.kubeconfig}", file=out, flush=True)
            _log(f"logs in {cp.log_dir}; Ctrl-C to stop")
            while not stop.wait(0.5):
                if not (cp.apiserver_running and cp.etcd_running):
                    _log("a component exited unexpectedly:")
                    for log in (cp.apiserver_log, cp.etcd_log):
                        print(f"--- {log}\n{_tail(log)}", file=sys.stderr)
                    return 1
            _log("stopping")
    except ControlPlaneError as exc:
        _log(f"error: {exc}")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m projectgen_dev.controlplane",
        description=f"Run a local etcd {ETCD_VERSION} + kube-apiserver {K8S_VERSION} until Ctrl-C.",
    )
    parser.add_argument("--crds", type=Path, help="directory of CRD *.yaml files to install")
    parser.add_argument("--policies", type=Path, help="kustomize directory of admission policies to apply")
    parser.add_argument(
        "--ensure", action="store_true", help="only find or build the binaries, print where, and exit"
    )
    args = parser.parse_args(argv)
    if args.ensure:
        try:
            print(f"[controlplane] binaries: {find_binaries()}", file=sys.stderr)
        except BinariesNotFoundError as exc:
            print(f"[controlplane] {exc}", file=sys.stderr)
            return 1
        return 0
    return serve(args.crds, policies=args.policies)


if __name__ == "__main__":
    raise SystemExit(main())
