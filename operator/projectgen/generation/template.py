"""Template sources: a copier or cookiecutter template, fetched here and rendered in a sandboxed child.

- The engine is the source's `engine`, else detected here from the checkout (`choose_engine`):
  copier.yml / copier.yaml against cookiecutter.json; both is the user's to resolve, neither
  is copier (as before there was a choice).

- The parent (this module) fetches the template before the child starts: a git clone with its
  submodules (`fetch_git`, the one place a template is cloned), or the ConfigMap's files. The
  clone is partial (`--filter=blob:none`, as GitHub, GitLab and Gitea serve it): the whole history
  and every tag, which copier's ref choice and version need, but the file contents of only the
  commit checked out, so a template with a long or heavy history is fetched at the size of one
  version (a server without filters sends everything, as before). git
  runs with no user or system configuration, no credential prompts, only http(s) transports
  (submodules included) and a low-speed abort. With a guard (the operator always passes one),
  the URL passes the outbound policy first and git is pinned to the checked addresses, follows
  no redirect, fetches submodules only from the template's own origin, and is stopped past the
  clone's size cap (`projectgen.outbound`). Then every VCS metadata entry (`.git`, at any
  depth) is removed from the checkout, so no `_exclude` can let one into a project.
- The child (`sandbox/`, `templaterender.py`) renders as `copier copy --trust --skip-tasks`
  does (cookiecutter: `cookiecutterrender.py`, as `cookiecutter --no-input`), confined by
  Landlock, seccomp and rlimits, with a clock fixed per generation. A cookiecutter render must
  leave exactly one directory, whose contents are the project (`project_directory`).
- Symlinks in the template pointing outside it are refused. A symlink in the rendered output
  (copier's `_preserve_symlinks: true`) is kept when it is relative and resolves, over the
  project's own entries, to a file or directory of the project (`links.py`); any other is
  refused, naming it. The child writes links only inside its output box; the parent reads each
  with `readlink`, never following it, and checks it before it enters the tree.
- Every rendered file name is checked like any other path, then the file is taken into the
  tree by `TreeWriter` (hard link + one read pass).

Nothing here touches process-wide state (cwd, environment, tempfile's directory): renders of
different resources run in parallel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dunamai
from packaging.version import InvalidVersion, Version

from projectgen import outbound
from projectgen.api.v1alpha1.generatedproject import RefKind, TemplateEngine, TemplateSource
from projectgen.diskusage import out_of_space
from projectgen.generation import refs, sandbox
from projectgen.generation.errors import GenerationError, SourceUnavailable
from projectgen.generation.paths import check_path, is_within, path_problem, printable_name, segment_problem
from projectgen.generation.sources import ConfigMaps, configmap_files
from projectgen.generation.tree import TreeWriter

log = logging.getLogger(__name__)

GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "",
    "SSH_ASKPASS": "",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_ALLOW_PROTOCOL": "http:https",
    "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
    "GIT_HTTP_LOW_SPEED_TIME": "60",
    "GIT_LFS_SKIP_SMUDGE": "1",
    "LC_ALL": "C",
}
_GIT_UNSET = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_CONFIG_PARAMETERS")
VCS_METADATA = frozenset({".git", ".hg", ".svn", ".bzr"})
"""Entries never taken from a template checkout or its output, whatever `_exclude` says."""
GIT_TIMEOUT = 600.0

_GIT_UNREACHABLE = re.compile(
    r"could not resolve|failed to connect|couldn't connect|connection refused|connection reset|"
    r"timed out|operation too slow|returned error: (5\d\d|429|408)|rpc failed|early eof|"
    r"unexpected disconnect|remote end hung up|network is unreachable|no route to host|"
    r"temporary failure|ssl_error_syscall|recv failure|send failure",
    re.IGNORECASE,
)
_GIT_AUTH = re.compile(
    r"authentication failed|could not read (username|password)|terminal prompts disabled|returned error: 40[13]",
    re.IGNORECASE,
)
_GIT_NOT_FOUND = re.compile(r"repository '.*' not found|returned error: 404", re.IGNORECASE)
_GIT_BAD_REF = re.compile(
    r"invalid reference|unknown revision|couldn't find remote ref|did not match any|not a valid object name|"
    r"bad revision|not a commit",
    re.IGNORECASE,
)
_SUBMODULE_URL = re.compile(r"(?:unable to access|clone of) '([^']+)'")


@dataclass(frozen=True)
class TemplateOptions:
    """How templates render for one generation."""

    limits: sandbox.Limits = field(default_factory=sandbox.Limits)
    clock: dt.datetime | None = None
    """What `now()` says to templates; None: the time the render starts (not reproducible)."""
    forbidden: tuple[str, ...] = ()
    """Directories the render must not be able to read even if the runtime lives under them."""
    should_stop: Callable[[], bool] | None = None
    git_env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for the template clone (the outbound URL policy's git configuration)."""


def generation_clock(created: str | None, source_date_epoch: str | None = None) -> dt.datetime | None:
    """The clock templates see: the resource's metadata.creationTimestamp (the same for every
    render of the resource, so the same spec gives the same bytes), else SOURCE_DATE_EPOCH (the
    reproducible-builds convention, for `projectgen render` on a file without metadata), else
    None (the current time)."""
    if created:
        try:
            return dt.datetime.fromisoformat(created.replace("Z", "+00:00")).astimezone(dt.UTC)
        except ValueError:
            pass
    if source_date_epoch and source_date_epoch.strip().isdigit():
        return dt.datetime.fromtimestamp(int(source_date_epoch), dt.UTC)
    return None


class _GitFailed(Exception):
    def __init__(self, stderr: str, returncode: int) -> None:
        super().__init__(stderr)
        self.stderr = stderr
        self.returncode = returncode


def apply_template(
    writer: TreeWriter,
    source: TemplateSource,
    where: str,
    configmaps: ConfigMaps,
    workdir: Path,
    guard: outbound.Guard | None = None,
    options: TemplateOptions | None = None,
) -> Applied:
    """Render `source` and take its files into `writer`. Returns warnings (skipped tasks, if any)
    and, for a template from git, what its ref resolved to.
    With a `guard`, the URL is checked and pinned and the clone capped (projectgen.outbound)."""
    options = options or TemplateOptions()
    if (source.url is None) == (source.config_map is None):
        raise GenerationError(f"{where}: set exactly one of url and configMap")
    subdirectory = check_path(source.subdirectory, f"{where}.subdirectory") if source.subdirectory else None
    data = source.data or {}
    if not isinstance(data, dict):
        raise GenerationError(f"{where}.data: must be a mapping of answers")
    try:
        json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise GenerationError(f"{where}.data: not representable as JSON ({exc})") from None
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix=".projectgen-template-", dir=workdir) as tmp:
        revision: dict[str, Any] | None = None
        resolution: refs.Resolution | None = None
        public: str | None = None
        ref = source.ref
        if source.config_map is not None:
            at = f"{where}.configMap"
            cm = configmaps.get(source.config_map.name, at)
            # Named after the ConfigMap and given to copier as a relative path, so `_src_path` in a
            # rendered answers file does not name a temporary directory.
            src = f"configmap-{source.config_map.name}"
            if src.endswith(".git"):  # copier would take it for a git repository
                src += "-template"
            checkout = Path(tmp, src)
            checkout.mkdir()
            materialise = TreeWriter(checkout, max_preview=0)
            for path, content, item in configmap_files(cm, source.config_map, at):
                materialise.write_bytes(path, content, executable=False, where=item)
            if source.ref is not None:
                notes.append(f"{where}.ref: ignored for a template from a ConfigMap")
        else:
            url = source.url or ""
            # copier records src in the answers file (`_src_path`, what `copier update` clones):
            # the URL, never its credentials.
            public = without_credentials(url)
            src = public if public.endswith(".git") else f"git+{public}"
            checkout = Path(tmp, "template")
            with _outbound(guard, url, Path(tmp), where) as env:
                extra = {**options.git_env, **env}
                fetched = fetch_git(url, source.ref, checkout, where, Path(tmp), extra, proxies=guard is None)
            revision, resolution = fetched.revision, fetched.resolution
            ref = resolution.target  # copier records `_commit` from the checkout, not a constraint
        strip_vcs_metadata(checkout)
        check_checkout(checkout, where)
        engine = choose_engine(checkout, source, where)
        box = Path(tmp, "box")
        out, scratch = box / "out", box / "tmp"
        out.mkdir(parents=True)
        scratch.mkdir()
        clock = options.clock or dt.datetime.now(dt.UTC)
        request = {
            "src": src,
            "checkout": str(checkout),
            "cwd": tmp,
            "out": str(out),
            "tmp": str(scratch),
            "data": data,
            "ref": ref,
            "revision": revision,
            "tasks": str(source.tasks),
            "engine": str(engine),
            "hooks": str(source.hooks),
            "directory": source.directory,
            "checkout_ref": _cruft_checkout(source, resolution),
            "template_url": public or src,
            "clock": clock.isoformat(),
            "forbidden": list(options.forbidden),
        }
        limits = _limits(options.limits, source)
        result = sandbox.run(request, box, limits, where, should_stop=options.should_stop)
        error = result.get("error")
        if error is not None:
            raise _child_error(result, limits, where, scrub=(str(out), str(checkout), str(tmp)), box=box)
        tasks = [str(t) for t in result.get("tasks") or []]
        writer.skip_if_exists += [str(p) for p in result.get("skipIfExists") or []]
        if tasks:
            notes.append(
                f"{where}: the template's _tasks were skipped (set tasks to Run to run them in the sandbox): {'; '.join(tasks)}"
            )
        hooks = [str(h) for h in result.get("hooksSkipped") or []]
        if hooks:
            notes.append(f"{where}: the template's hooks were skipped (hooks is Skip): {', '.join(hooks)}")
        root = out if engine == TemplateEngine.COPIER else project_directory(out, where)
        if subdirectory is not None:
            root = _subdirectory(root, subdirectory, where)
        import_tree(writer, root, where)
        return Applied(notes, resolution, engine)


@dataclass(frozen=True)
class Applied:
    notes: list[str]
    resolution: refs.Resolution | None = None
    """What the ref of a template from git resolved to (None: a ConfigMap template)."""
    engine: TemplateEngine = TemplateEngine.COPIER


COPIER_FILES = ("copier.yml", "copier.yaml")
COOKIECUTTER_FILE = "cookiecutter.json"


def choose_engine(checkout: Path, source: TemplateSource, where: str) -> TemplateEngine:
    """The engine the source sets, else the one its files name: copier.yml / copier.yaml against
    cookiecutter.json (in `directory` when set). Both: GenerationError; neither: copier."""
    root = checkout
    if source.directory is not None:
        directory = check_path(source.directory, f"{where}.directory")
        root = checkout / directory
        if not root.is_dir() or root.is_symlink():
            raise GenerationError(f"{where}.directory: {directory!r} is not a directory of the template")
    engine = source.engine
    if engine is None:
        copier = [name for name in COPIER_FILES if (checkout / name).is_file()]
        cookiecutter = (root / COOKIECUTTER_FILE).is_file()
        if copier and cookiecutter:
            raise GenerationError(
                f"{where}: the template has both {copier[0]} (copier) and {COOKIECUTTER_FILE} (cookiecutter); "
                "set engine to copier or cookiecutter"
            )
        if not copier and not cookiecutter and source.directory is not None:
            raise GenerationError(
                f"{where}.directory: {source.directory!r} holds no {COOKIECUTTER_FILE}; "
                "not a cookiecutter template"
            )
        # Neither: copier, as before engines were chosen (copier takes a template without
        # copier.yml, every file a template file); a resource that rendered keeps rendering.
        engine = TemplateEngine.COOKIECUTTER if cookiecutter else TemplateEngine.COPIER
    if engine == TemplateEngine.COPIER and source.directory is not None:
        raise GenerationError(
            f"{where}.directory: only for cookiecutter templates; a copier template names its own "
            "(_subdirectory in copier.yml)"
        )
    return engine


def project_directory(out: Path, where: str) -> Path:
    """The one directory a cookiecutter template rendered: its contents are the project, as
    Backstage's fetch:cookiecutter and cruft take them."""
    with os.scandir(out) as entries:
        found = sorted(entries, key=lambda e: e.name)
    if len(found) == 1 and found[0].is_dir(follow_symlinks=False):
        return Path(found[0].path)
    names = ", ".join(repr(printable_name(e.name)) for e in found[:5]) + (", ..." if len(found) > 5 else "")
    what = f"{len(found)} top-level entries ({names})" if found else "nothing"
    if len(found) == 1:
        what = f"{names}, which is not a directory"
    raise GenerationError(
        f"{where}: the cookiecutter template rendered {what}; it must render exactly one directory "
        "(such as {{cookiecutter.project_slug}}), whose contents become the project"
    )


def _cruft_checkout(source: TemplateSource, resolution: refs.Resolution | None) -> str | None:
    """What `.cruft.json` records as `checkout` (what `cruft update` checks out): a branch, tag or
    commit as the spec names it; nothing for the latest tag or a constraint, which cruft cannot
    follow (it then updates to the repository's default branch)."""
    if resolution is None or resolution.kind in (RefKind.LATEST, RefKind.CONSTRAINT):
        return None
    return source.ref


def without_credentials(url: str) -> str:
    """The URL without user and password: what status and the answers file may hold."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _limits(operator: sandbox.Limits, source: TemplateSource) -> sandbox.Limits:
    """The operator's limits, lowered where the source asks (`spec...template.limits`)."""
    asked = source.limits
    if asked is None:
        return operator
    mib = sandbox.limits.MIB
    return operator.lowered(
        cpu_seconds=asked.cpu_seconds,
        wall_seconds=asked.wall_seconds,
        memory_bytes=asked.memory_mib * mib if asked.memory_mib else None,
        file_size_bytes=asked.file_size_mib * mib if asked.file_size_mib else None,
        output_bytes=asked.output_mib * mib if asked.output_mib else None,
        output_files=asked.output_files,
    )


@contextlib.contextmanager
def _outbound(guard: outbound.Guard | None, url: str, scratch: Path, where: str) -> Iterator[dict[str, str]]:
    """The git environment that pins `url` (Refused: GenerationError), and the clone's size cap."""
    if guard is None:
        yield {}
        return
    try:
        env = outbound.config_env(outbound.git_config(guard, "template", url, submodules=True))
        limits = guard.limits
        with outbound.watch_size(
            scratch, limits.template_max_bytes, limits.template_max_files, "the template repository"
        ) as watch:
            yield {**env, **watch.env}
    except (outbound.Refused, outbound.CapExceeded) as exc:
        raise GenerationError(f"{where}.url: {exc}") from None


def fetch_git(
    url: str,
    ref: str | None,
    dest: Path,
    where: str,
    scratch: Path,
    extra_env: Mapping[str, str],
    *,
    proxies: bool = False,
) -> Fetched:
    """Clone `url` at `ref` (a tag, branch, commit or version constraint; default: the latest
    PEP 440 tag, else HEAD) with its submodules into `dest`; return what copier records of it
    (commit description, hash, version) and what the ref resolved to.

    The one place a template is cloned: the outbound URL policy adds its git configuration
    through `extra_env`. The environment's proxy variables are kept only with `proxies` (no policy:
    `projectgen render` without `--policy`, on its caller's network)."""
    env = git_env(scratch, extra_env, proxies=proxies)

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(dest), *args], env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT
        )
        if done.returncode:
            raise _GitFailed(done.stderr, done.returncode)
        return done.stdout

    try:
        dest.mkdir()
        git("clone", "--no-checkout", "--filter=blob:none", "--quiet", "--", url, ".")
        resolution = _resolution(git, ref, where)
        git("checkout", "--quiet", "--detach", resolution.commit)
    except _GitFailed as exc:
        raise _git_error(exc, url, ref, where, scrub=str(scratch)) from None
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(
            f"{where}: cloning template repository {_redact(url)} timed out; will retry"
        ) from None
    if (dest / ".gitmodules").is_file():
        try:
            git("submodule", "update", "--init", "--recursive", "--checkout", "--force")
        except _GitFailed as exc:
            raise _submodule_error(exc, url, where, scrub=str(scratch)) from None
        except subprocess.TimeoutExpired:
            raise SourceUnavailable(
                f"{where}: cloning the template's submodules timed out; will retry"
            ) from None
    try:
        described = git("describe", "--tags", "--always").strip()
        commit_hash = git("rev-parse", "HEAD").strip()
    except _GitFailed as exc:
        raise _git_error(exc, url, ref, where, scrub=str(scratch)) from None
    revision = {"commit": described, "commit_hash": commit_hash, "version": _version(dest, described)}
    return Fetched(revision, dataclasses.replace(resolution, commit=commit_hash))


def git_env(scratch: Path, extra_env: Mapping[str, str], *, proxies: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_UNSET and not k.startswith("KUBERNETES_")}
    if not proxies:
        env = outbound.without_proxies(env)
    env.update(GIT_ENV, TMPDIR=str(scratch), **extra_env)
    return env


def list_refs(url: str, guard: outbound.Guard | None, where: str) -> refs.Refs:
    """The repository's HEAD, branches and tags (`git ls-remote`), through the outbound policy
    exactly as a clone goes: the URL checked, its addresses pinned, no redirect, no proxy.
    Raises GenerationError (refused, not found, needs credentials) or SourceUnavailable."""
    with (
        tempfile.TemporaryDirectory(prefix="projectgen-ls-remote-") as tmp,
        _outbound(guard, url, Path(tmp), where) as extra,
    ):
        env = git_env(Path(tmp), extra, proxies=guard is None)
        argv = ["git", "ls-remote", "--", url, "HEAD", "refs/heads/*", "refs/tags/*"]
        try:
            done = subprocess.run(argv, env=env, cwd=tmp, capture_output=True, text=True, timeout=GIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise SourceUnavailable(
                f"{where}: listing template repository {_redact(url)} timed out"
            ) from None
        if done.returncode:
            raise _git_error(_GitFailed(done.stderr, done.returncode), url, None, where, scrub=tmp)
    return refs.parse_listing(done.stdout.splitlines())


@dataclass(frozen=True)
class Fetched:
    """A checkout's record: what copier writes of it (`revision`) and what the ref resolved to."""

    revision: dict[str, Any]
    resolution: refs.Resolution


def _resolution(git: Callable[..., str], ref: str | None, where: str) -> refs.Resolution:
    """`ref` resolved over the clone's refs, by the same rules as the update check
    (`refs.resolve`); a ref that is none of tag, branch, constraint (`HEAD~1`) is left to git."""
    try:
        listed = git("show-ref", "--dereference").splitlines()
    except _GitFailed:
        listed = []  # an empty repository: show-ref exits 1
    listing = refs.parse_listing(listed, remote_prefix="refs/remotes/origin/")
    try:
        return refs.resolve(ref, listing)
    except refs.RefError as exc:
        if ref is None or refs.constraint(ref) is not None:
            raise GenerationError(f"{where}.ref: {exc}") from None
        return refs.Resolution(RefKind.COMMIT, _resolve(git, ref), target=ref)


def _resolve(git: Callable[..., str], target: str) -> str:
    for candidate in (f"refs/remotes/origin/{target}", f"refs/tags/{target}", target):
        try:
            return git(
                "rev-parse", "--verify", "--quiet", "--end-of-options", f"{candidate}^{{commit}}"
            ).strip()
        except _GitFailed:
            continue
    raise _GitFailed(f"fatal: invalid reference: {target}", 128)


def _version(checkout: Path, described: str) -> str | None:
    """The template's version as copier computes it (dunamai, else the description)."""
    try:
        return str(
            dunamai.Version.from_git(pattern=dunamai.Pattern.DefaultUnprefixed, path=checkout).serialize(
                style=dunamai.Style.Pep440
            )
        )
    except (ValueError, RuntimeError):
        pass
    if re.match(r"^.+-\d+-g\w+$", described):
        base, count, git_hash = described.rsplit("-", 2)
        return f"{base}.post{count}+{git_hash}"
    try:
        return str(Version(described))
    except InvalidVersion:
        return None


def strip_vcs_metadata(root: Path) -> None:
    """Remove every `.git` (and other VCS metadata) entry under `root`, submodules' included."""
    for directory, dirs, files in os.walk(root):
        for name in list(dirs):
            if name in VCS_METADATA:
                full = os.path.join(directory, name)
                if os.path.islink(full):
                    os.unlink(full)
                else:
                    shutil.rmtree(full)
                dirs.remove(name)
        for name in files:
            if name in VCS_METADATA:
                os.unlink(os.path.join(directory, name))


def check_checkout(root: Path, where: str) -> None:
    """Refuse symlinks pointing outside the template before anything renders."""
    real = os.path.realpath(root)
    for directory, dirs, files in os.walk(real):
        for name in dirs + files:
            full = os.path.join(directory, name)
            if os.path.islink(full) and not is_within(real, full):
                rel = printable_name(os.path.relpath(full, real))
                raise GenerationError(
                    f"{where}: the template contains a symlink {rel!r} pointing outside the template; refused"
                )


def _child_error(
    result: dict[str, Any], limits: sandbox.Limits, where: str, scrub: tuple[str, ...], box: Path
) -> GenerationError:
    """A render's own error as a render failure. The render's word is never an infrastructure
    error (which kopf retries for ever): "disk full" is raised as OSError only when the parent
    itself cannot allocate space beside the render's output."""
    code = result.get("errno")
    if result.get("limit") == "processes":
        return GenerationError(
            f"{where}: the template started more processes than its limit of {limits.processes}"
            " (programs it runs count, and so do other renders' where the limit is per user)"
        )
    if result.get("limit"):
        return GenerationError(
            f"{where}: the template went over its memory limit of {limits.memory_bytes // sandbox.limits.MIB} MiB"
        )
    if code == errno.EFBIG:
        return GenerationError(
            f"{where}: the template wrote a file over the file size limit of {limits.file_size_bytes // sandbox.limits.MIB} MiB"
        )
    if code in (errno.EMFILE, errno.ENFILE):
        return GenerationError(f"{where}: the template went over the limit of {limits.open_files} open files")
    if code in (errno.ENOSPC, errno.EDQUOT):
        full = out_of_space(box)
        if full is not None:
            raise OSError(full, os.strerror(full))
    message = str(result.get("error"))
    for path in scrub:
        message = message.replace(path + os.sep, "").replace(path, ".")
    if code is not None:
        message = f"the template failed: {message}"
    return GenerationError(f"{where}: {message}")


def import_tree(writer: TreeWriter, root: Path, where: str) -> None:
    """Take every regular file and symlink under `root` into the tree, checking each name, and
    each link's target once all are in; refuse special files. Empty directories are not part of
    a project (as in git)."""
    links: list[str] = []
    stack: list[tuple[str, str]] = [("", str(root))]
    while stack:
        rel, directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name in VCS_METADATA:
                    continue  # never part of a project, whatever the template's _exclude says
                path = f"{rel}/{entry.name}" if rel else entry.name
                problem = segment_problem(entry.name) or path_problem(path)
                if problem is not None:
                    raise GenerationError(f"{where}: rendered {problem}")
                if entry.is_symlink():
                    target = os.readlink(entry.path)
                    try:
                        target.encode("utf-8")
                    except UnicodeEncodeError:
                        raise GenerationError(
                            f"{where}: rendered symlink {path!r} has a target that is not valid UTF-8 "
                            f"({printable_name(target)!r})"
                        ) from None
                    writer.add_symlink(path, target, where=where)
                    links.append(path)
                elif entry.is_dir(follow_symlinks=False):
                    stack.append((path, entry.path))
                elif entry.is_file(follow_symlinks=False):
                    mode = entry.stat(follow_symlinks=False).st_mode
                    writer.add_file(path, entry.path, executable=bool(mode & 0o111), where=where)
                else:
                    raise GenerationError(
                        f"{where}: the rendered template contains {path!r}, not a regular file"
                    )
    writer.check_links(links)


def _subdirectory(out: Path, subdirectory: str, where: str) -> Path:
    current = out
    for segment in subdirectory.split("/"):
        current = current / segment
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            mode = 0
        if not stat.S_ISDIR(mode):
            raise GenerationError(
                f"{where}.subdirectory: {subdirectory!r} is not a directory of the rendered template"
            )
    return current


def _git_error(exc: _GitFailed, url: str, ref: str | None, where: str, scrub: str) -> GenerationError:
    shown = _redact(url)
    detail = _git_detail(exc, url, scrub)
    if outbound.REFUSED_TRANSPORT in exc.stderr:
        return GenerationError(
            f"{where}: template repository {shown} has a submodule on another origin; only submodules on "
            "the template's own scheme, host and port are fetched (rule submodules): move it there"
        )
    if "redirect" in exc.stderr.lower() or re.search(r"returned error: 30\d", exc.stderr):
        return GenerationError(
            f"{where}: template repository {shown} answered with a redirect; redirects are not followed "
            "(rule redirects): use the URL it redirects to, if the policy allows it"
        )
    if _GIT_AUTH.search(exc.stderr):
        anonymous = "" if "@" in urlsplit(url).netloc else "; templates are cloned anonymously"
        return GenerationError(
            f"{where}: template repository {shown} needs credentials or refused them ({detail}){anonymous}"
        )
    if _GIT_NOT_FOUND.search(exc.stderr):
        return GenerationError(f"{where}: template repository {shown} not found ({detail})")
    if _GIT_BAD_REF.search(exc.stderr):
        return GenerationError(f"{where}: ref {ref!r} not found in template repository {shown} ({detail})")
    if _GIT_UNREACHABLE.search(exc.stderr):
        return SourceUnavailable(
            f"{where}: template repository {shown} is unreachable ({detail}); will retry"
        )
    return GenerationError(f"{where}: git failed on template repository {shown}: {detail}")


def _submodule_error(exc: _GitFailed, url: str, where: str, scrub: str) -> GenerationError:
    """Name the submodule's URL (as git resolved it), never a local path."""
    found = _SUBMODULE_URL.search(exc.stderr)
    sub = _redact(found.group(1)) if found else "(unknown URL)"
    detail = _git_detail(exc, found.group(1) if found else url, scrub)
    if outbound.REFUSED_TRANSPORT in exc.stderr:
        return GenerationError(
            f"{where}: template repository {_redact(url)} has a submodule on another origin ({sub}); only "
            "submodules on the template's own scheme, host and port are fetched (rule submodules): move it there"
        )
    if _GIT_NOT_FOUND.search(exc.stderr):
        return GenerationError(f"{where}: template submodule {sub} not found ({detail})")
    if _GIT_AUTH.search(exc.stderr):
        return GenerationError(
            f"{where}: template submodule {sub} needs credentials or refused them ({detail})"
        )
    if _GIT_UNREACHABLE.search(exc.stderr):
        return SourceUnavailable(f"{where}: template submodule {sub} is unreachable ({detail}); will retry")
    return GenerationError(f"{where}: git failed on template submodule {sub}: {detail}")


def _git_detail(exc: _GitFailed, url: str, scrub: str) -> str:
    lines = [ln.strip() for ln in exc.stderr.splitlines() if ln.strip()]
    important = [ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith(("fatal:", "error:"))]
    important = [ln for ln in important if scrub not in ln] or important[:1]
    detail = "; ".join(important or lines[-1:]) or f"git exited with {exc.returncode}"
    detail = re.sub(re.escape(scrub) + r"[^\s':]*", "<template>", detail)
    return _redact_text(detail, url)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:2000] if text else type(exc).__name__


def _redact(url: str) -> str:
    """The URL without user and password, for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _redact_text(text: str, url: str) -> str:
    userinfo = urlsplit(url).netloc.rpartition("@")[0]
    return text.replace(userinfo, "***") if userinfo else text
