"""`python -m projectgen_dev COMMAND`: the development commands (`make demo`, `make dev`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from projectgen_dev import controlplane, node
from projectgen_dev.demo import REPO_ROOT, demo_command


def controlplane_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m projectgen_dev controlplane",
        description="Run a local kube-apiserver + etcd until interrupted.",
    )
    parser.add_argument("--crds", type=Path, default=REPO_ROOT / "crds", help="CRDs to install")
    parser.add_argument(
        "--policies",
        type=Path,
        default=REPO_ROOT / "manifests" / "created-by",
        help="admission policies to apply (kustomize directory)",
    )
    parser.add_argument(
        "--node",
        action="store_true",
        help="also run kube-controller-manager, kube-scheduler, containerd and a kubelet (root; see projectgen_dev.node)",
    )
    args = parser.parse_args(argv)
    if args.node:
        return node.serve(
            args.crds if args.crds.is_dir() else None,
            policies=args.policies if args.policies.is_dir() else None,
        )
    return controlplane.serve(
        args.crds if args.crds.is_dir() else None, policies=args.policies if args.policies.is_dir() else None
    )


COMMANDS = {
    "controlplane": (
        controlplane_command,
        "run a local kube-apiserver + etcd (built once from the Go module proxy)",
    ),
    "demo": (
        demo_command,
        "local end-to-end demo: control plane, operator, samples (--keep: leave it running)",
    ),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m projectgen_dev COMMAND [ARGS]\n\ncommands:")
        for name, (_, doc) in COMMANDS.items():
            print(f"  {name:<13} {doc}")
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        print(
            f"projectgen_dev: unknown command {argv[0]!r}; see `python -m projectgen_dev --help`",
            file=sys.stderr,
        )
        return 2
    return command[0](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
