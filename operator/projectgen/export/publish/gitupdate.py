"""Deliver a render to a repository a team works in: the three-way merge, over git smart HTTP.

`gitpush` commits a tree as it is; on a branch with a team's commits that reverts their work.
Here the render is imported as a parentless commit (the would-be base of the next update),
the target branch and the export's refs (`update.delivery.ExportRefs`) are fetched as a partial
clone (`--filter=blob:none --depth=1`: trees only; the merge fetches the few blobs both sides
changed, lazily, through the promisor remote), `update.merge` merges, `update.delivery.decide`
picks the landing, and one atomic push moves the branch and the export's refs together, so a
failed push leaves the record as it was. The target branch is only ever fast-forwarded, under a
lease on the head this run merged onto: a branch that moved in between is not overwritten.

This module shares `gitpush`'s private git session (credentials in the environment only, no
config read, timeouts): it is that module's second half, kept apart so each stays readable.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from projectgen import outbound
from projectgen.api.v1alpha1.repositoryexport import UpdateStrategy
from projectgen.export.publish.gitpush import (
    LOCAL_REF,
    Credentials,
    GitSession,
    commit_header,
    fast_import,
    git_ident,
)
from projectgen.export.publish.model import PublishError
from projectgen.export.update.delivery import Action, ExportRefs, decide
from projectgen.export.update.merge import (
    MergeError,
    MergeResult,
    Repo,
    empty_tree,
    merge_trees,
    team_owned_matcher,
    tree_of,
)
from projectgen.export.update.record import TemplateRef
from projectgen.generation.manifest import ProjectFile

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
HASH_TRAILER = "Projectgen-Content-Hash"
"""Trailer of a render commit: which render it is (the base and pending refs point at such commits)."""
TEMPLATE_TRAILER = "Projectgen-Template"
"""Trailer of a render commit, one per template source: `<source> <url> <tag or commit>`. The base
ref's render says which template versions the branch was delivered last: the request's "from"."""


@dataclass(frozen=True)
class UpdateOutcome:
    action: Action
    reason: str
    """Why a Push became a request; empty otherwise."""
    commit_sha: str
    """The target branch's head after the delivery."""
    pushed: bool
    """Something was pushed (the branch, the request's branch or a ref of the export)."""
    remote_was_empty: bool
    render_sha: str
    """The render as a parentless commit: the base of the next update once it is delivered."""
    request_head: str | None = None
    """PullRequest: the commit on the export's branch."""
    merge: MergeResult | None = None
    base_moved: bool = False
    """The merged request's render became the base in this delivery."""
    head_is_ours: bool = False
    """The target branch's head is this export's last push (refs/projectgen/<export>/delivered)."""
    base_templates: tuple[TemplateRef, ...] = ()
    """The template refs of the render the merge started from (its trailers); empty when unrecorded."""


def _remote_refs(git: GitSession, refs: ExportRefs) -> dict[str, str]:
    out = git.run(
        "ls-remote", "origin", "refs/heads/*", refs.base, refs.pending, refs.delivered, what="ls-remote"
    )
    found: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, ref = line.partition("\t")
        found[ref] = sha
    return found


def _summary(message: str, merge: MergeResult) -> str:
    lines = [
        message.rstrip("\n"),
        "",
        f"Template update: {merge.added.count} added, {merge.changed.count} changed, "
        f"{merge.deleted.count} deleted, {len(merge.conflicts)} conflicts.",
    ]
    if merge.conflicts:
        lines += ["", "Conflicts:", *(f"- {c.path} ({c.kind})" for c in merge.conflicts[:50])]
    return "\n".join(lines) + "\n"


def _commit(git: GitSession, tree: str, parent: str | None, message: str, author: tuple[str, str]) -> str:
    ident = git_ident(*author)
    name, _, rest = ident.partition(" <")
    email, _, date = rest.partition("> ")
    saved = git.env
    git.env = {
        **saved,
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
        "GIT_COMMITTER_DATE": date,
    }
    try:
        parents = ("-p", parent) if parent else ()
        return git.run("commit-tree", tree, *parents, "-m", message, what="commit-tree").strip()
    finally:
        git.env = saved


def _stamp(message: str, content_hash: str, templates: Sequence[TemplateRef]) -> str:
    trailers = [f"{HASH_TRAILER}: {content_hash}"]
    trailers += [f"{TEMPLATE_TRAILER}: {t.trailer()}" for t in templates]
    return f"{message.rstrip()}\n\n" + "\n".join(trailers) + "\n"


def _templates_of(git: GitSession, commit: str) -> tuple[TemplateRef, ...]:
    """The template refs a render commit records (read from the raw object: no blob needed)."""
    raw = git.run("cat-file", "commit", commit, what="cat-file")
    prefix = f"{TEMPLATE_TRAILER}: "
    found = (
        TemplateRef.from_trailer(line[len(prefix) :]) for line in raw.splitlines() if line.startswith(prefix)
    )
    return tuple(t for t in found if t is not None)


def _fetch_optional(git: GitSession, sha: str) -> bool:
    """Fetch a commit the branch held once (an export from before day two); False when the server
    no longer has it or will not serve it by name."""
    try:
        git.run(
            "fetch", "--quiet", "--no-tags", "--filter=blob:none", "--depth=1", "origin", sha, what="fetch"
        )
    except PublishError as exc:
        if not exc.permanent:
            raise
        return False
    return True


def _merge_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """`update.merge` raises its own MergeError (it imports nothing of publish): reported as a PublishError."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except MergeError as exc:
            raise PublishError(exc.message, permanent=exc.permanent) from None

    return wrapper


@_merge_errors
def deliver(
    *,
    url: str,
    credentials: Credentials,
    branch: str,
    refs: ExportRefs,
    tree: Path,
    files: Sequence[ProjectFile],
    message: str,
    author_name: str,
    author_email: str,
    content_hash: str,
    strategy: UpdateStrategy,
    delivered: str | None,
    merged_hash: str | None = None,
    team_owned: Sequence[str] = (),
    path: str | None = None,
    templates: Sequence[TemplateRef] = (),
    workdir: Path,
    timeout: float,
    guard: outbound.Guard | None = None,
) -> UpdateOutcome:
    """Deliver the render in `tree` to `branch`: its first commit, or a three-way merge with what
    the branch holds now. `delivered`: the commit this export last put on `branch` (status), for
    the Push compare-and-swap. `merged_hash`: the contentHash of the export's request the forge
    reports merged; when the pending ref holds that render, it is the base from now on.
    `path`: the directory of the repository the project lives in (config.path); the merge sees only
    that directory, and every tree pushed keeps the rest of the repository entry for entry.
    `templates`: what the render's template sources resolved to, recorded in the render commit."""
    git = GitSession(url, credentials, workdir=workdir, timeout=timeout, guard=guard)
    git.run("init", "--quiet", "--bare", what="init")
    git.run("remote", "add", "origin", url, what="remote add")
    git.run("config", "remote.origin.promisor", "true", what="config")
    git.run("config", "remote.origin.partialclonefilter", "blob:none", what="config")
    remote = _remote_refs(git, refs)
    heads = {ref for ref in remote if ref.startswith("refs/heads/")}
    head = remote.get(f"refs/heads/{branch}")
    author = (author_name, author_email)

    stamped = _stamp(message, content_hash, templates)
    fast_import(git, tree, files, commit_header(stamped, author_name, author_email, None))
    render = git.run("rev-parse", LOCAL_REF, what="rev-parse").strip()
    repo = Repo(env=git.env, cwd=git.home, timeout=timeout)
    if head is None:
        first = render
        if path:
            grafted = _graft(repo, None, path, tree_of(repo, render))
            first = _commit(git, grafted, None, stamped, author)
        git.run(
            "push", "--quiet", "--porcelain", "--atomic", "origin",
            f"{first}:refs/heads/{branch}", f"+{render}:{refs.base}", f"+{first}:{refs.delivered}",
            what=f"push to branch {branch}",
        )  # fmt: skip
        return UpdateOutcome(Action.FIRST, "", first, True, not heads, render)

    specs = [f"+refs/heads/{branch}:refs/remotes/origin/{branch}"]
    specs += [f"+{ref}:{ref}" for ref in (refs.base, refs.pending) if ref in remote]
    request_ref = f"refs/heads/{refs.branch}"
    if request_ref in remote:
        specs.append(f"+{request_ref}:refs/remotes/origin/{refs.branch}")
    git.run(
        "fetch", "--quiet", "--no-tags", "--filter=blob:none", "--depth=1", "origin", *specs, what="fetch"
    )

    promote = (
        merged_hash is not None
        and refs.pending in remote
        and _stamped(git, remote[refs.pending], merged_hash)
    )
    base_commit = remote.get(refs.pending) if promote else None
    base_commit = base_commit or remote.get(refs.base)
    if base_commit is None and refs.pending not in remote and delivered and _fetch_optional(git, delivered):
        base_commit = delivered  # before day two the delivered commit's tree was the render
    merge = merge_trees(
        repo,
        base=tree_of(repo, base_commit) if base_commit else None,
        ours=_subtree(repo, head, path) if path else tree_of(repo, head),
        theirs=tree_of(repo, render),
        team_owned=team_owned_matcher(team_owned),
        prefetch=lambda oids: _prefetch(git, oids),
    )
    before = _templates_of(git, base_commit) if base_commit else ()
    ours = remote.get(refs.delivered) == head
    if ours:
        delivered = head  # our last push, whether or not its status was written before a restart
    # Without a recorded base this export has delivered nothing here (ifExists: PullRequest into
    # someone else's branch): whatever status says, the head is not its commit to push on top of.
    decision = decide(strategy=strategy, head=head, delivered=delivered if base_commit else None, merge=merge)
    owned = (refs.base, refs.pending, refs.delivered)
    lease = [f"--force-with-lease={ref}:{remote.get(ref, '')}" for ref in owned]

    if decision.action == Action.NOTHING:
        # The branch already holds what the render changes: the render is delivered.
        if (
            base_commit is None
            or tree_of(repo, base_commit) != tree_of(repo, render)
            or before != tuple(templates)
        ):
            git.run("push", "--quiet", "--porcelain", *lease, "origin", f"+{render}:{refs.base}", what="push")
            return UpdateOutcome(
                Action.NOTHING,
                "",
                head,
                True,
                False,
                render,
                merge=merge,
                head_is_ours=ours,
                base_templates=before,
            )
        return UpdateOutcome(
            Action.NOTHING,
            "",
            head,
            False,
            False,
            render,
            merge=merge,
            head_is_ours=ours,
            base_templates=before,
        )

    merged = _graft(repo, tree_of(repo, head), path, merge.tree) if path else merge.tree
    commit = _commit(git, merged, head, _summary(message, merge), author)
    if decision.action == Action.PUSH:
        git.run(
            "push", "--quiet", "--porcelain", "--atomic", *lease,
            f"--force-with-lease=refs/heads/{branch}:{head}", "origin",
            f"{commit}:refs/heads/{branch}", f"+{render}:{refs.base}", f"+{commit}:{refs.delivered}",
            what=f"push to branch {branch}",
        )  # fmt: skip
        log.info("pushed the update %s on top of %s", commit, head)
        return UpdateOutcome(Action.PUSH, "", commit, True, False, render, merge=merge, base_templates=before)

    current = remote.get(request_ref)
    if current is not None and _same_change(git, current, merged, head):
        # A restart after the push: the request's branch already holds this merge.
        commit = current
    specs = [f"+{commit}:{request_ref}", f"+{render}:{refs.pending}"]
    if promote and remote.get(refs.pending):
        specs.append(f"+{remote[refs.pending]}:{refs.base}")
    pending = remote.get(refs.pending)
    if current == commit and pending and tree_of(repo, pending) == tree_of(repo, render) and not promote:
        return UpdateOutcome(
            Action.PULL_REQUEST, decision.reason, head, False, False, render, commit, merge, promote,
            base_templates=before,
        )  # fmt: skip
    git.run(
        "push", "--quiet", "--porcelain", "--atomic", *lease,
        f"--force-with-lease={request_ref}:{current or ''}", "origin", *specs,
        what=f"push to branch {refs.branch}",
    )  # fmt: skip
    log.info("pushed the update %s to %s for a pull request", commit, refs.branch)
    return UpdateOutcome(
        Action.PULL_REQUEST, decision.reason, head, True, False, render, commit, merge, promote,
        base_templates=before,
    )  # fmt: skip


def _entries(repo: Repo, tree: str | None) -> list[tuple[str, str, str, bytes]]:
    """(mode, type, object, name) of each entry of `tree`, read from the tree object (no blob)."""
    if tree is None:
        return []
    out = repo.run("ls-tree", "-z", "--end-of-options", tree)
    entries = []
    for record in out.split(b"\0"):
        if record:
            meta, _, name = record.partition(b"\t")
            mode, kind, oid = meta.decode().split(" ")
            entries.append((mode, kind, oid, name))
    return entries


def _subtree(repo: Repo, commit: str, path: str) -> str:
    """The tree at `path` in `commit` (the empty tree when there is none). A file there is refused."""
    tree: str | None = tree_of(repo, commit)
    for part in path.encode().split(b"/"):
        found = [e for e in _entries(repo, tree) if e[3] == part]
        if not found:
            return empty_tree(repo)
        if found[0][1] != "tree":
            raise PublishError(
                f"config.path {path!r}: the repository has a file where the directory goes", permanent=True
            )
        tree = found[0][2]
    assert tree is not None
    return tree


def _graft(repo: Repo, root: str | None, path: str, subtree: str) -> str:
    """`root` with the tree at `path` replaced by `subtree`: every other entry, at every level, is the
    same object as before (`mktree --missing`: the partial clone holds no blobs, none is needed)."""
    head, _, rest = path.partition("/")
    name = head.encode()
    entries = _entries(repo, root)
    current = next((oid for _m, kind, oid, n in entries if n == name and kind == "tree"), None)
    new = _graft(repo, current, rest, subtree) if rest else subtree
    kept = [e for e in entries if e[3] != name]
    if new != empty_tree(repo):
        kept.append(("040000", "tree", new, name))
    data = b"".join(f"{m} {k} {o}\t".encode() + n + b"\0" for m, k, o, n in kept)
    return repo.run("mktree", "-z", "--missing", input=data).decode().strip()


def _prefetch(git: GitSession, oids: Sequence[str]) -> None:
    """The blobs the line merges read, in as few requests as a partial clone's lazy fetch would
    make for one (no negotiation, the objects named), instead of one request per blob."""
    for start in range(0, len(oids), 1000):
        git.run(
            "-c", "fetch.negotiationAlgorithm=noop", "fetch", "--quiet", "--no-tags",
            "--no-write-fetch-head", "--recurse-submodules=no", "--filter=blob:none", "origin",
            *oids[start : start + 1000],
            what="fetch",
        )  # fmt: skip


def _stamped(git: GitSession, commit: str, content_hash: str) -> bool:
    """The render commit carries this contentHash (its trailer)."""
    raw = git.run("cat-file", "commit", commit, what="cat-file")
    return f"\n{HASH_TRAILER}: {content_hash}\n" in raw


def _same_change(git: GitSession, commit: str, tree: str, parent: str) -> bool:
    """The commit has this tree and this one parent. Read from the raw object: the fetch was
    shallow, so git itself would show no parent."""
    raw = git.run("cat-file", "commit", commit, what="cat-file")
    header = raw.partition("\n\n")[0].splitlines()
    return header[0] == f"tree {tree}" and [h for h in header if h.startswith("parent ")] == [
        f"parent {parent}"
    ]
