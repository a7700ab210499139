"""The one way a command reports: `error: ...` / `warning: ...` on stderr, and its exit status.

A command raises CommandError for what the person must fix (exit status 1); argparse's own exit
(`--help`: 0, a bad flag: 2) is returned, not raised, so `main()` can be called in-process.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class CommandError(Exception):
    """What was wrong with the input, said so that a person can fix it. `status`: the exit
    status (1; `diff` uses 2, as 1 means "there are changes")."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def guarded(command: Callable[[list[str]], int], argv: list[str]) -> int:
    """Run `command(argv)`: a CommandError becomes `error: ...` and status 1, argparse's exit its status."""
    try:
        return command(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
