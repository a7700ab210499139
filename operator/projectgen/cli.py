"""`projectgen`: run the operator, or do its work offline without a cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from projectgen import __version__


def _crds(argv: list[str]) -> int:
    from projectgen import crdgen

    parser = argparse.ArgumentParser(prog="projectgen crds", description="Write the CRDs from the models.")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("crds"), help="directory (default: ./crds/)"
    )
    parser.add_argument("--check", action="store_true", help="fail if the files on disk are not up to date")
    args = parser.parse_args(argv)
    if args.check:
        stale = crdgen.stale_crds(args.output)
        if stale:
            print(f"out of date: {', '.join(stale)}; run `projectgen crds`", file=sys.stderr)
            return 1
        print("CRDs are up to date")
        return 0
    for path in crdgen.write_crds(args.output):
        print(path)
    return 0


def _run(argv: list[str]) -> int:
    from projectgen.run import run_command

    return run_command(argv)


def _render(argv: list[str]) -> int:
    from projectgen.generation.offline import render_command

    return render_command(argv)


def _archive(argv: list[str]) -> int:
    from projectgen.export.offline import archive_command

    return archive_command(argv)


COMMANDS = {
    "run": (_run, "run the operator against the current kubeconfig / in-cluster config"),
    "render": (_render, "render a GeneratedProject YAML into a directory, without a cluster"),
    "archive": (_archive, "pack a rendered directory as zip / tar / tar.gz, deterministically"),
    "crds": (_crds, "write (or --check) the CRDs generated from the models"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: projectgen COMMAND [ARGS]  (version {__version__})\n\ncommands:")
        for name, (_, doc) in COMMANDS.items():
            print(f"  {name:<13} {doc}")
        return 0 if argv else 2
    if argv[0] == "--version":
        print(__version__)
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"projectgen: unknown command {argv[0]!r}; see `projectgen --help`", file=sys.stderr)
        return 2
    return command[0](argv[1:])
