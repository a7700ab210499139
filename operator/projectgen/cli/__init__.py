"""`projectgen`: run the operator, or do its work offline without a cluster.

One module per command (`run`, `render`, `diff`, `archive`, `download`, `crds`), each with `main(argv) -> int`; a
command is imported only when it runs (the operator's imports are not paid by `render`). Errors
and warnings go through `output`.
"""

from __future__ import annotations

import importlib
import sys

from projectgen import __version__
from projectgen.cli.output import guarded

COMMANDS = {
    "run": ("projectgen.cli.run", "run the operator against the current kubeconfig / in-cluster config"),
    "render": ("projectgen.cli.render", "render a GeneratedProject YAML into a directory, without a cluster"),
    "diff": (
        "projectgen.cli.diff",
        "render a GeneratedProject YAML and diff it against a directory or a git repository",
    ),
    "archive": (
        "projectgen.cli.archive",
        "pack a rendered directory as zip / tar / tar.gz, deterministically",
    ),
    "download": (
        "projectgen.cli.download",
        "download an archive export (rexp/NAME) with your kubeconfig, checking its SHA-256",
    ),
    "crds": ("projectgen.cli.crds", "write (or --check) the CRDs generated from the models"),
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
    return guarded(importlib.import_module(command[0]).main, argv[1:])
