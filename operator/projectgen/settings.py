"""Operator configuration: one class, every field from a `PROJECTGEN_*` environment variable."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from projectgen.generation.follow import parse_duration
from projectgen.outbound.addresses import parse_networks

PREFIX = "PROJECTGEN_"


def _env(name: str, default: str) -> str:
    return os.environ.get(PREFIX + name, default)


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _own_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "projectgen-system"
    except OSError:
        return "projectgen-system"


def _shard_urls(value: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in (i.strip() for i in value.split(",") if i.strip()):
        shard, sep, url = item.partition("=")
        if not sep or not shard.strip() or not url.strip().startswith("https://"):
            raise ValueError(f"{PREFIX}SHARD_URLS: expected shard=https://host:port, not {item!r}")
        pairs.append((shard.strip(), url.strip().rstrip("/")))
    return tuple(pairs)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(
        default_factory=lambda: Path(_env("DATA_DIR", "/var/lib/projectgen")),
        metadata={"env": "DATA_DIR", "doc": "The volume: projects, exports and staging live here."},
    )
    status_file_cap: int = field(
        default_factory=lambda: int(_env("STATUS_FILE_CAP", "1000")),
        metadata={"env": "STATUS_FILE_CAP", "doc": "Files listed in status.files (the rest: manifest.json)."},
    )
    log_format: str = field(
        default_factory=lambda: _env("LOG_FORMAT", "json"),
        metadata={"env": "LOG_FORMAT", "doc": "json (default) or plain."},
    )
    liveness_port: int = field(
        default_factory=lambda: int(_env("LIVENESS_PORT", "8080")),
        metadata={"env": "LIVENESS_PORT", "doc": "Port of the /healthz endpoint; 0 disables it."},
    )
    metrics_port: int = field(
        default_factory=lambda: int(_env("METRICS_PORT", "9090")),
        metadata={"env": "METRICS_PORT", "doc": "Port of the Prometheus /metrics endpoint; 0 disables it."},
    )
    serving_port: int = field(
        default_factory=lambda: int(_env("SERVING_PORT", "8443")),
        metadata={
            "env": "SERVING_PORT",
            "doc": "HTTPS port of the aggregated download API (the APIService's endpoint); 0 disables it.",
        },
    )
    operator_namespace: str = field(
        default_factory=lambda: _env("OPERATOR_NAMESPACE", "") or _own_namespace(),
        metadata={
            "env": "OPERATOR_NAMESPACE",
            "doc": "The operator's own namespace (the serving CA's Secret); default: the ServiceAccount's.",
        },
    )
    serving_names: tuple[str, ...] = field(
        default_factory=lambda: tuple(n for n in re.split(r"[\s,]+", _env("SERVING_NAMES", "")) if n),
        metadata={
            "env": "SERVING_NAMES",
            "doc": "More DNS names / IPs for the serving certificate (comma-separated), beside "
            "projectgen-api.<namespace>.svc (what kube-apiserver verifies).",
        },
    )
    serving_cert_dir: Path | None = field(
        default_factory=lambda: Path(v) if (v := _env("SERVING_CERT_DIR", "")) else None,
        metadata={
            "env": "SERVING_CERT_DIR",
            "doc": "An admin-supplied serving certificate (tls.crt, tls.key, optionally ca.crt: a mounted "
            "cert-manager Secret), reloaded when it changes; unset: the operator's own CA.",
        },
    )
    apiservice: str = field(
        default_factory=lambda: _env("APISERVICE", "v1alpha1.download.projectgen.io"),
        metadata={
            "env": "APISERVICE",
            "doc": "The APIService whose caBundle the operator keeps in sync; empty: none.",
        },
    )
    webhook_configuration: str = field(
        default_factory=lambda: _env("WEBHOOK_CONFIGURATION", "projectgen-created-by"),
        metadata={
            "env": "WEBHOOK_CONFIGURATION",
            "doc": "The createdBy MutatingWebhookConfiguration whose caBundle the operator keeps in sync "
            "(manifests/created-by/webhook/; absent: nothing to do); empty: none.",
        },
    )
    shard: str = field(
        default_factory=lambda: _env("SHARD", ""),
        metadata={
            "env": "SHARD",
            "doc": "This shard's name (the projectgen.io/shard label it serves); empty: not sharded.",
        },
    )
    shard_urls: tuple[tuple[str, str], ...] = field(
        default_factory=lambda: _shard_urls(_env("SHARD_URLS", "")),
        metadata={
            "env": "SHARD_URLS",
            "doc": "Where each shard's download API is (shard=https://host:port, comma-separated): "
            "a download of another shard's export is proxied there.",
        },
    )
    pull_request_poll_seconds: float = field(
        default_factory=lambda: float(_env("PULL_REQUEST_POLL_SECONDS", "300")),
        metadata={
            "env": "PULL_REQUEST_POLL_SECONDS",
            "doc": "How often an export's open pull request is read (one GET on the forge), so a merge "
            "or close shows in status between reconciles; 0: only when the export reconciles.",
        },
    )
    serving_refresh_seconds: float = field(
        default_factory=lambda: float(_env("SERVING_REFRESH_SECONDS", "60")),
        metadata={
            "env": "SERVING_REFRESH_SECONDS",
            "doc": "How often the HTTPS side re-reads the serving CA Secret, the requestheader "
            "configuration and the caBundles (a rotation is followed within this).",
        },
    )
    downloads_max: int = field(
        default_factory=lambda: int(_env("DOWNLOADS_MAX", "32")),
        metadata={
            "env": "DOWNLOADS_MAX",
            "doc": "Downloads served at once, by everyone together; past it: 429 with Retry-After.",
        },
    )
    downloads_per_user: int = field(
        default_factory=lambda: int(_env("DOWNLOADS_PER_USER", "4")),
        metadata={
            "env": "DOWNLOADS_PER_USER",
            "doc": "Downloads one user may have running at once; past it: 429 with Retry-After.",
        },
    )
    serving_header_timeout: float = field(
        default_factory=lambda: float(_env("SERVING_HEADER_TIMEOUT", "15")),
        metadata={
            "env": "SERVING_HEADER_TIMEOUT",
            "doc": "Seconds the HTTPS port waits for a TLS handshake, and then for a request's headers "
            "(on a new or an idle kept-alive connection), before it closes the connection.",
        },
    )
    serving_idle_timeout: float = field(
        default_factory=lambda: float(_env("SERVING_IDLE_TIMEOUT", "60")),
        metadata={
            "env": "SERVING_IDLE_TIMEOUT",
            "doc": "Seconds a download may wait on a client that reads nothing (or a webhook on a request "
            "body that does not come) before the connection is dropped.",
        },
    )
    namespaces: tuple[str, ...] = field(
        # `projectgen run -n a -n b` passes them space-separated; commas are accepted too.
        default_factory=lambda: tuple(n for n in re.split(r"[\s,]+", _env("NAMESPACES", "")) if n),
        metadata={
            "env": "NAMESPACES",
            "doc": "Namespaces (kopf patterns) to serve, separated by spaces or commas; empty: all.",
        },
    )
    label_selector: str = field(
        default_factory=lambda: _env("LABEL_SELECTOR", ""),
        metadata={
            "env": "LABEL_SELECTOR",
            "doc": "Serve only resources matching this label selector (sharding).",
        },
    )
    workers: int = field(
        default_factory=lambda: int(_env("WORKERS", "4")),
        metadata={"env": "WORKERS", "doc": "Generations / exports run at once (threads)."},
    )
    sandbox_cpu_seconds: int = field(
        default_factory=lambda: int(_env("SANDBOX_CPU_SECONDS", "60")),
        metadata={"env": "SANDBOX_CPU_SECONDS", "doc": "CPU seconds one template render may use."},
    )
    sandbox_wall_seconds: int = field(
        default_factory=lambda: int(_env("SANDBOX_WALL_SECONDS", "120")),
        metadata={"env": "SANDBOX_WALL_SECONDS", "doc": "Wall-clock seconds before a render is killed."},
    )
    sandbox_memory_mib: int = field(
        default_factory=lambda: int(_env("SANDBOX_MEMORY_MIB", "1024")),
        metadata={"env": "SANDBOX_MEMORY_MIB", "doc": "Address space of one render process, in MiB."},
    )
    sandbox_file_size_mib: int = field(
        default_factory=lambda: int(_env("SANDBOX_FILE_SIZE_MIB", "256")),
        metadata={"env": "SANDBOX_FILE_SIZE_MIB", "doc": "Largest file a render may write, in MiB."},
    )
    sandbox_output_mib: int = field(
        default_factory=lambda: int(_env("SANDBOX_OUTPUT_MIB", "1024")),
        metadata={"env": "SANDBOX_OUTPUT_MIB", "doc": "Total bytes a render may write, in MiB."},
    )
    sandbox_output_files: int = field(
        default_factory=lambda: int(_env("SANDBOX_OUTPUT_FILES", "50000")),
        metadata={"env": "SANDBOX_OUTPUT_FILES", "doc": "Files and directories a render may write."},
    )
    sandbox_open_files: int = field(
        default_factory=lambda: int(_env("SANDBOX_OPEN_FILES", "256")),
        metadata={"env": "SANDBOX_OPEN_FILES", "doc": "File descriptors a render may hold open."},
    )
    sandbox_processes: int = field(
        default_factory=lambda: int(_env("SANDBOX_PROCESSES", "512")),
        metadata={
            "env": "SANDBOX_PROCESSES",
            "doc": "RLIMIT_NPROC of a render (the kernel counts every task of the operator's user); "
            "a render cannot fork at all (seccomp), so this bounds its threads.",
        },
    )

    policy_file: Path | None = field(
        default_factory=lambda: Path(v) if (v := _env("POLICY_FILE", "")) else None,
        metadata={
            "env": "POLICY_FILE",
            "doc": "The outbound policy (YAML, the ConfigMap projectgen-policy mounted); missing: the default.",
        },
    )
    cluster_cidrs: tuple[str, ...] = field(
        default_factory=lambda: tuple(n for n in re.split(r"[\s,]+", _env("CLUSTER_CIDRS", "")) if n),
        metadata={
            "env": "CLUSTER_CIDRS",
            "doc": "The cluster's service and pod ranges (CIDRs, comma-separated): refused like private ranges.",
        },
    )
    hosts_file: Path | None = field(
        default_factory=lambda: Path(v) if (v := _env("HOSTS_FILE", "")) else None,
        metadata={
            "env": "HOSTS_FILE",
            "doc": "A hosts file the outbound checks resolve names from first (tests, pinned names).",
        },
    )
    template_max_bytes: int = field(
        default_factory=lambda: int(_env("TEMPLATE_MAX_BYTES", str(512 << 20))),
        metadata={"env": "TEMPLATE_MAX_BYTES", "doc": "Bytes one template clone + render may write."},
    )
    template_max_files: int = field(
        default_factory=lambda: int(_env("TEMPLATE_MAX_FILES", "50000")),
        metadata={"env": "TEMPLATE_MAX_FILES", "doc": "Files one template clone + render may write."},
    )
    forge_max_answer_bytes: int = field(
        default_factory=lambda: int(_env("FORGE_MAX_ANSWER_BYTES", str(16 << 20))),
        metadata={"env": "FORGE_MAX_ANSWER_BYTES", "doc": "Largest forge API answer read."},
    )
    template_min_interval: float = field(
        default_factory=lambda: parse_duration(_env("TEMPLATE_MIN_INTERVAL", "1m")),
        metadata={
            "env": "TEMPLATE_MIN_INTERVAL",
            "doc": "Shortest template.updateInterval honoured (a duration, e.g. 1m): no project makes "
            "the operator list a template repository more often.",
        },
    )

    def __post_init__(self) -> None:
        if self.status_file_cap < 0 or self.status_file_cap > 5000:
            raise ValueError(
                f"{PREFIX}STATUS_FILE_CAP must be between 0 and 5000, not {self.status_file_cap}"
            )
        if self.log_format not in ("json", "plain"):
            raise ValueError(f"{PREFIX}LOG_FORMAT must be json or plain, not {self.log_format!r}")
        for name in ("liveness_port", "metrics_port", "serving_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{PREFIX}{name.upper()} must be a port (0-65535), or 0 for off")
        for name in ("downloads_max", "downloads_per_user"):
            if getattr(self, name) < 1:
                raise ValueError(f"{PREFIX}{name.upper()} must be at least 1")
        for name in ("serving_header_timeout", "serving_idle_timeout", "serving_refresh_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{PREFIX}{name.upper()} must be a positive number of seconds")
        if self.workers < 1:
            raise ValueError(f"{PREFIX}WORKERS must be at least 1")
        for f in fields(self):
            if f.name.startswith("sandbox_") and getattr(self, f.name) < 1:
                raise ValueError(f"{PREFIX}{f.metadata['env']} must be at least 1")
        for name in ("template_max_bytes", "template_max_files", "forge_max_answer_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{PREFIX}{name.upper()} must be at least 1")
        parse_networks(self.cluster_cidrs, f"{PREFIX}CLUSTER_CIDRS")

    @classmethod
    def from_env(cls) -> Settings:
        return cls()
