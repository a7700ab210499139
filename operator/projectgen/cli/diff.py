"""`projectgen diff`: what a change to a GeneratedProject (a template bump) would do to a
repository, before it merges: a dry run for review in a GitOps pipeline.

    projectgen diff -f gp.yaml --against DIR|GIT_URL[@branch][:path] [--base DIR] [render flags]

It renders the spec as `projectgen render` does (same flags, same code) and prints a stat and a
unified diff from the target (a/) to the render (b/). The exit status is that of
`git diff --exit-code`: 0 no changes, 1 changes, 2 an error (the spec, the render, the target).
A git target is cloned shallowly (one branch, one commit), without credential prompts; with
`--policy` its URL passes the outbound policy as a push remote would.

`--base DIR` (the render the target was delivered last) previews a day-two delivery instead: the
render is merged into the target with the operator's own three-way merge (`export.update.merge`,
the template's `_skip_if_exists` included), and the diff is from the target to the merge, after
the conflicts the operator's request would list. The three directories are imported into a
private bare repository (`git add -A -f`: ignore rules do not hide files; `.git` never counts),
because the merge works over git trees, as in the operator.
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
from projectgen.export.update.merge import MergeError, MergeResult, Repo, merge_trees, team_owned_matcher
from projectgen.export.update.record import EXPLAINED
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
    parser.add_argument(
        "--base",
        type=Path,
        metavar="DIR",
        help="the render the target was delivered last: preview the operator's three-way merge, with its conflicts",
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
        merge = None
        after = Path(tmp, TREE)
        if args.base is not None:
            if not args.base.is_dir():
                raise CommandError(f"--base {args.base}: not a directory")
            after = Path(tmp, "merged")
            merge = _merge(args.base, root, Path(tmp, TREE), after, result.manifest.skip_if_exists, Path(tmp))
        changes = treediff.diff_trees(root, after)
    if not changes and not (merge and merge.conflicts):
        print(f"no changes: the render is the same as {shown}", file=sys.stderr)
        return 0
    sys.stdout.write(treediff.stat(changes) if changes else " 0 files changed\n")
    if merge and merge.conflicts:
        count = len(merge.conflicts)
        sys.stdout.write(
            f"\n{count} conflict{'s' if count != 1 else ''} (the operator's request would list them):\n"
        )
        sys.stdout.write("".join(f"- {c.path} ({c.kind}): {EXPLAINED[c.kind]}\n" for c in merge.conflicts))
    if not args.stat and changes:
        sys.stdout.write("\n" + treediff.patch(changes))
    return 1


def _merge(
    base: Path, ours: Path, theirs: Path, out: Path, team_owned: list[str], scratch: Path
) -> MergeResult:
    """The operator's merge of `theirs` into `ours` against `base`, checked out into `out`."""
    env = {**git_env(scratch, {}, proxies=False), "GIT_DIR": str(scratch / "merge.git")}
    repo = Repo(env=env, cwd=scratch, timeout=GIT_TIMEOUT)
    try:
        repo.run("init", "--quiet", "--bare")
        trees = [_import(repo, root, scratch / f"index-{n}") for n, root in enumerate((base, ours, theirs))]
        merge = merge_trees(
            repo, base=trees[0], ours=trees[1], theirs=trees[2], team_owned=team_owned_matcher(team_owned)
        )
        out.mkdir()
        index = {"GIT_INDEX_FILE": str(scratch / "index-out"), "GIT_WORK_TREE": str(out)}
        repo.run("read-tree", merge.tree, env=index)
        repo.run("checkout-index", "--all", "--force", env=index)
    except MergeError as exc:
        raise CommandError(f"--base: {exc.message}") from None
    return merge


def _import(repo: Repo, root: Path, index: Path) -> str:
    """The tree of a directory as git stores it (modes, symlinks), its .git left out."""
    env = {"GIT_INDEX_FILE": str(index), "GIT_WORK_TREE": str(root.resolve())}
    inside = Repo(env=repo.env, cwd=root.resolve(), timeout=repo.timeout)
    inside.run("add", "--all", "--force", "--", ".", env=env)
    return inside.run("write-tree", env=env).decode().strip()


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
