"""`projectgen diff`: what a change to a GeneratedProject (a template bump) would do to a
repository, before it merges: a dry run for review in a GitOps pipeline.

    projectgen diff -f gp.yaml --against DIR|GIT_URL[@branch][:path] [render flags]

It renders the spec as `projectgen render` does (same flags, same code) and prints a stat and a
unified diff from the target (a/) to the render (b/). The exit status is that of
`git diff --exit-code`: 0 no changes, 1 changes, 2 an error (the spec, the render, the target).
A git target is cloned shallowly (one branch, one commit), without credential prompts; with
`--policy` its URL passes the outbound policy as a push remote would.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from projectgen import outbound
from projectgen.cli.output import CommandError, warn
from projectgen.cli.render import add_input_arguments, load_input, render_input
from projectgen.generation import treediff
from projectgen.generation.errors import GenerationError
from projectgen.generation.paths import check_path
from projectgen.generation.template import GIT_TIMEOUT, git_env, without_credentials
from projectgen.storage import TREE

ERROR = 2


@dataclass(frozen=True)
class GitTarget:
    url: str
    branch: str | None
    path: str | None


_GIT_TARGET = re.compile(r"^(?P<url>https?://[^/]+/[^@:]*?)(?:@(?P<branch>[^:]+))?(?::(?P<path>.+))?$")


def parse_target(text: str) -> Path | GitTarget:
    """A directory, or `GIT_URL[@branch][:path]` (the URL's own user@ and :port stay in its host)."""
    if not text.startswith(("https://", "http://")):
        return Path(text)
    found = _GIT_TARGET.match(text)
    if found is None or not found.group("url").rstrip("/").count("/") >= 3:
        raise CommandError(f"--against {text!r}: expected GIT_URL[@branch][:path]", ERROR)
    path = found.group("path")
    if path is not None:
        try:
            path = check_path(path.strip("/"), "--against path")
        except GenerationError as exc:
            raise CommandError(str(exc), ERROR) from None
    return GitTarget(found.group("url"), found.group("branch"), path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="projectgen diff",
        description="Render a GeneratedProject as `projectgen render` does and diff it against a directory "
        "or a git repository. Exit status: 0 no changes, 1 changes, 2 error.",
    )
    add_input_arguments(parser)
    parser.add_argument(
        "--against",
        required=True,
        metavar="DIR|GIT_URL[@branch][:path]",
        help="what to compare the render with",
    )
    parser.add_argument("--stat", action="store_true", help="print only the stat, not the diff")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return ERROR if exc.code else 0
    try:
        return _diff(args)
    except CommandError as exc:
        raise CommandError(str(exc), ERROR) from None


def _diff(args: argparse.Namespace) -> int:
    given = load_input(args)
    target = parse_target(args.against)
    with tempfile.TemporaryDirectory(prefix="projectgen-diff-") as tmp:
        if isinstance(target, GitTarget):
            root = _clone(target, Path(tmp, "target"), given.guard)
            shown = without_credentials(target.url) + (f"@{target.branch}" if target.branch else "")
        else:
            root, shown = target, str(target)
            if not root.is_dir():
                raise CommandError(f"--against {root}: not a directory")
        try:
            result = render_input(given, Path(tmp, TREE), Path(tmp))
        except GenerationError as exc:
            raise CommandError(str(exc)) from exc
        for warning in result.warnings:
            warn(warning)
        changes = treediff.diff_trees(root, Path(tmp, TREE))
    if not changes:
        print(f"no changes: the render is the same as {shown}", file=sys.stderr)
        return 0
    sys.stdout.write(treediff.stat(changes))
    if not args.stat:
        sys.stdout.write("\n" + treediff.patch(changes))
    return 1


def _clone(target: GitTarget, dest: Path, guard: outbound.Guard | None) -> Path:
    extra: dict[str, str] = {}
    if guard is not None:
        try:
            extra = outbound.config_env(outbound.git_config(guard, "forge", target.url))
        except outbound.Refused as exc:
            raise CommandError(f"--against: {exc}") from None
    env = git_env(dest.parent, extra, proxies=guard is None)
    argv = ["git", "clone", "--quiet", "--depth=1", "--no-tags"]
    if target.branch:
        argv += ["--branch", target.branch]
    try:
        done = subprocess.run(
            [*argv, "--", target.url, str(dest)], env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise CommandError(f"--against: cloning {without_credentials(target.url)} timed out") from None
    if done.returncode:
        detail = " ".join(done.stderr.split()).replace(target.url, without_credentials(target.url))
        raise CommandError(f"--against: cannot clone {without_credentials(target.url)}: {detail}")
    root = dest / target.path if target.path else dest
    if not root.is_dir() or root.is_symlink():
        raise CommandError(
            f"--against: {target.path!r} is not a directory of {without_credentials(target.url)}"
        )
    if os.path.realpath(root) != os.path.join(os.path.realpath(dest), target.path or "").rstrip("/"):
        raise CommandError(f"--against: {target.path!r} leaves the repository")
    return root
