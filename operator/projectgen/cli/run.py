"""`projectgen run`: start the operator (kopf) with the settings from the environment and flags.

Not inside `handlers/`: importing that package registers the handlers with filters read from the
settings, so the flags must be in the environment before it is imported (by name, below).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import sys

import kopf

from projectgen import metrics
from projectgen.cli.output import CommandError
from projectgen.serving.server import Server
from projectgen.settings import Settings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="projectgen run", description="Run the projectgen operator.")
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="serve only namespaces matching this kopf pattern (e.g. team-a, 'team-*', '!kube-*'); repeatable",
    )
    parser.add_argument("--selector", help="serve only resources with these labels (k=v,k,!k); for sharding")
    parser.add_argument(
        "--data-dir", help="the volume (default: $PROJECTGEN_DATA_DIR or /var/lib/projectgen)"
    )
    parser.add_argument("--liveness-port", type=int, help="port of /healthz (default 8080; 0: off)")
    parser.add_argument("--metrics-port", type=int, help="port of Prometheus /metrics (default 9090; 0: off)")
    parser.add_argument(
        "--serving-port", type=int, help="HTTPS port of the download API (default 8443; 0: off)"
    )
    parser.add_argument("--log-format", choices=["json", "plain"], help="default: json")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    # Flags win over the environment; the handlers module reads Settings at import.
    for flag, env in (
        (args.data_dir, "DATA_DIR"),
        (args.selector, "LABEL_SELECTOR"),
        (args.liveness_port, "LIVENESS_PORT"),
        (args.metrics_port, "METRICS_PORT"),
        (args.serving_port, "SERVING_PORT"),
        (args.log_format, "LOG_FORMAT"),
        (" ".join(args.namespace) or None, "NAMESPACES"),
    ):
        if flag is not None:
            os.environ[f"PROJECTGEN_{env}"] = str(flag)

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"projectgen run: {exc}", file=sys.stderr)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
        log_prefix=settings.log_format != "json",  # plain lines name the object: [namespace/name]
    )
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    importlib.import_module("projectgen.handlers")  # registers the handlers, with the filters set above
    if settings.metrics_port:
        try:
            metrics.ensure_served(settings.metrics_port)
        except OSError as exc:
            raise CommandError(
                f"cannot serve metrics on port {settings.metrics_port}: {exc.strerror or exc}; "
                "set PROJECTGEN_METRICS_PORT (--metrics-port) to a free port, or 0 for none"
            ) from None

    liveness = f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_operate(settings, liveness))
    except Exception as exc:
        refusal = _startup_refusal(exc)
        if refusal is None:
            raise
        # the last line of the log: what `kubectl describe pod` shows (FallbackToLogsOnError)
        raise CommandError(refusal) from None
    return 0


def _startup_refusal(exc: BaseException) -> str | None:
    """The message of a startup handler that refused for good (an unsupported Kubernetes), which
    kopf wraps in its activity error."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kopf.PermanentError):
            return str(seen)
        seen = seen.__cause__
    return None


async def _operate(settings: Settings, liveness: str | None) -> None:
    """kopf, and beside it in the same event loop the HTTPS server (download API)."""
    server = Server(settings) if settings.serving_port else None
    if server is not None:
        server.start_in_background()
    try:
        await kopf.operator(
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            standalone=True,
            liveness_endpoint=liveness,
        )
    finally:
        if server is not None:
            await server.stop()
