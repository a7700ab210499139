"""Template sources: a copier template rendered with copier's Python API, safely.

- copier's unsafe features (tasks, migrations, Jinja extensions) are refused before
  anything runs: the template's configuration is read and checked first.
- Symlinks in the template pointing outside it are refused (Jinja's `include` would
  follow them and read the operator's files); symlinks in the rendered output are refused
  too: projectgen does not support symlinks in a project.
- Every rendered file name is checked like any other path, then the file is taken into
  the tree by `TreeWriter` (hard link + one read pass).
- copier runs with explicit settings (no user settings file, so no "trusted" prefixes),
  `defaults=True` (never prompts), and git with no user or system configuration, no
  credential prompts, only http(s) transports (submodules included), a low-speed abort,
  and copier's mirror cache in a temporary directory of this render (a cache shared
  between renders would let one namespace reuse another's credentials).
- With a guard (the operator always passes one), the URL passes the outbound policy first
  and git is pinned to the checked addresses, follows no redirect, fetches submodules only
  from the template's own origin, and is stopped past the clone's size cap
  (`projectgen.outbound`).

copier changes the process' working directory and reads its environment, so renders
are serialised by a module lock; the rest of generation runs concurrently.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import io
import logging
import os
import re
import stat
import tempfile
import threading
import warnings
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from copier._main import Worker
from copier._settings import SettingsModel
from copier.errors import CopierError, CopierWarning, ForbiddenPathError, UnsafeTemplateError
from plumbum import local
from plumbum.commands.processes import ProcessExecutionError

from projectgen import outbound
from projectgen.api.v1alpha1.generatedproject import TemplateSource
from projectgen.generation.errors import GenerationError, SourceUnavailable
from projectgen.generation.paths import check_path, is_within, path_problem, printable_name, segment_problem
from projectgen.generation.sources import ConfigMaps, configmap_files
from projectgen.generation.tree import TreeWriter

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
UNSAFE_FEATURES = ("jinja_extensions", "migrations", "tasks")
"""copier.yml settings (without their leading '_') that make a template run code."""

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
_ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EIO}
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

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


HOST_FILTERS = ("expandvars", "expanduser", "realpath", "fileglob")
"""Filters copier adds (from jinja2-ansible-filters) that read the operator's environment
variables and file system: a template could copy them into the project it renders."""


class _Worker(Worker):
    """copier's Worker, minus one step that does not apply here and costs a `git config`
    subprocess per rendered file (about two thirds of copier's time on a big template), and
    minus the Jinja filters that look at the operator's host."""

    @cached_property
    def jinja_env(self) -> Any:
        env = super().jinja_env
        for name in HOST_FILTERS:
            env.filters.pop(name, None)
        return env

    def _sync_git_index_executable_bit(self, dst_relpath: Path, src_mode: int) -> None:
        # It mirrors executable bits into the destination's git index when the destination is
        # a git repository with core.fileMode=false; ours is always a fresh temporary directory.
        return None


def apply_template(
    writer: TreeWriter,
    source: TemplateSource,
    where: str,
    configmaps: ConfigMaps,
    workdir: Path,
    guard: outbound.Guard | None = None,
) -> list[str]:
    """Render `source` and take its files into `writer`. Returns warnings (copier's, if any).
    With a `guard`, the URL is checked and pinned and the clone capped (projectgen.outbound)."""
    if (source.url is None) == (source.config_map is None):
        raise GenerationError(f"{where}: set exactly one of url and configMap")
    subdirectory = check_path(source.subdirectory, f"{where}.subdirectory") if source.subdirectory else None
    data = source.data or {}
    if not isinstance(data, dict):
        raise GenerationError(f"{where}.data: must be a mapping of answers")
    with tempfile.TemporaryDirectory(prefix=".projectgen-template-", dir=workdir) as tmp:
        out = Path(tmp, "out")
        if source.config_map is not None:
            at = f"{where}.configMap"
            cm = configmaps.get(source.config_map.name, at)
            # The template directory is named after the ConfigMap and given to copier as a
            # relative path, so `_src_path` in a rendered answers file does not name a
            # temporary directory (which would change the contentHash on every render).
            src_name = f"configmap-{source.config_map.name}"
            if src_name.endswith(".git"):  # copier would take it for a git repository
                src_name += "-template"
            src_dir = Path(tmp, src_name)
            src_dir.mkdir()
            materialise = TreeWriter(src_dir, max_preview=0)
            for path, content, item in configmap_files(cm, source.config_map, at):
                materialise.write_bytes(path, content, executable=False, where=item)
            found = _run_copier(src_name, out, Path(tmp), data, None, where, cwd=Path(tmp))
            if source.ref is not None:
                found.append(f"{where}.ref: ignored for a template from a ConfigMap")
        else:
            url = source.url or ""
            src = url if url.endswith(".git") else f"git+{url}"
            with _outbound(guard, url, Path(tmp), where) as env:
                found = _run_copier(src, out, Path(tmp, "cache"), data, source.ref, where, cwd=None, env=env)
        root = out
        if subdirectory is not None:
            root = _subdirectory(out, subdirectory, where)
        import_tree(writer, root, where)
        return found


def import_tree(writer: TreeWriter, root: Path, where: str) -> None:
    """Take every regular file under `root` into the tree, checking each name; refuse symlinks
    and special files. Empty directories are not part of a project (as in git)."""
    stack: list[tuple[str, str]] = [("", str(root))]
    while stack:
        rel, directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                path = f"{rel}/{entry.name}" if rel else entry.name
                problem = segment_problem(entry.name) or path_problem(path)
                if problem is not None:
                    raise GenerationError(f"{where}: rendered {problem}")
                if entry.is_symlink():
                    target = printable_name(os.readlink(entry.path))
                    raise GenerationError(
                        f"{where}: the rendered template contains a symlink {path!r} -> {target!r}; "
                        "symlinks are not supported in a project"
                    )
                if entry.is_dir(follow_symlinks=False):
                    stack.append((path, entry.path))
                elif entry.is_file(follow_symlinks=False):
                    mode = entry.stat(follow_symlinks=False).st_mode
                    writer.add_file(path, entry.path, executable=bool(mode & 0o111), where=where)
                else:
                    raise GenerationError(
                        f"{where}: the rendered template contains {path!r}, not a regular file"
                    )


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


def _run_copier(
    src: str,
    out: Path,
    cache: Path,
    data: dict[str, Any],
    ref: str | None,
    where: str,
    *,
    cwd: Path | None,
    env: dict[str, str] | None = None,
) -> list[str]:
    stderr = io.StringIO()
    with (
        _LOCK,
        _process_state(cache, cwd, scratch=out.parent, env=env or {}),
        contextlib.redirect_stderr(stderr),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        try:
            with _Worker(
                src_path=src,
                dst_path=out,
                data=copy.deepcopy(data),
                vcs_ref=ref,
                settings=SettingsModel(),
                user_defaults={},
                defaults=True,
                overwrite=True,
                quiet=True,
                unsafe=False,
                cleanup_on_error=False,
            ) as worker:
                _check_template(worker, where)
                worker.run_copy()
        except GenerationError:
            raise
        except Exception as exc:
            if (
                isinstance(exc, OSError)
                and not isinstance(exc, ProcessExecutionError)
                and exc.errno in _ENVIRONMENT_ERRNOS
            ):
                raise
            log.debug("copier failed on %s", _redact(src), exc_info=True)
            raise _copier_error(exc, src, ref, where) from exc
    notes = [f"{where}: copier: {w.message}" for w in caught if issubclass(w.category, CopierWarning)]
    for line in _ANSI.sub("", stderr.getvalue()).splitlines():
        if line.strip():
            notes.append(f"{where}: copier: {line.strip()}")
    return notes


@contextlib.contextmanager
def _process_state(cache: Path, cwd: Path | None, scratch: Path, env: dict[str, str]) -> Iterator[None]:
    """Process-wide state copier reads: the mirror cache location, git's environment (copier
    runs git through plumbum, whose environment is its own copy), the working directory, and the
    temporary directory (copier's own clones and checks go there): `scratch`, inside this
    render's staging directory, so a crash leaves nothing in the pod's /tmp."""
    saved_cache = os.environ.get("COPIER_CACHE_DIR")
    saved_tempdir = tempfile.tempdir
    try:
        saved_cwd: str | None = os.getcwd()
    except OSError:
        saved_cwd = None
    os.environ["COPIER_CACHE_DIR"] = str(cache)
    tempfile.tempdir = str(scratch)
    try:
        with local.env(**GIT_ENV, **env, TMPDIR=str(scratch)):
            for name in _GIT_UNSET:
                if name in local.env:
                    del local.env[name]
            if cwd is not None:
                os.chdir(cwd)
            yield
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_cache is None:
            os.environ.pop("COPIER_CACHE_DIR", None)
        else:
            os.environ["COPIER_CACHE_DIR"] = saved_cache
        with contextlib.suppress(OSError):
            os.chdir(saved_cwd or "/")


def _check_template(worker: _Worker, where: str) -> None:
    """Refuse what would run code or read outside the template, before copier renders."""
    config = worker.template.config_data
    used = [f for f in UNSAFE_FEATURES if config.get(f)]
    if used:
        raise GenerationError(
            f"{where}: template uses copier's unsafe features ({', '.join(used)}); projectgen refuses them"
        )
    root = os.path.realpath(worker.template.local_abspath)
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(directory, name)
            if os.path.islink(full) and not is_within(root, full):
                rel = printable_name(os.path.relpath(full, root))
                raise GenerationError(
                    f"{where}: the template contains a symlink {rel!r} pointing outside the template; refused"
                )
        dirs[:] = [d for d in dirs if d != ".git"]


def _copier_error(exc: Exception, src: str, ref: str | None, where: str) -> GenerationError:
    if isinstance(exc, ProcessExecutionError):
        return _git_error(exc, src, ref, where)
    if isinstance(exc, UnsafeTemplateError):
        return GenerationError(
            f"{where}: template uses copier's unsafe features; projectgen refuses them ({_one_line(exc)})"
        )
    if isinstance(exc, ForbiddenPathError):
        return GenerationError(
            f"{where}: copier refused a path outside the project or the template ({_one_line(exc)})"
        )
    if isinstance(exc, (CopierError, ValueError)):
        return GenerationError(f"{where}: copier: {_one_line(exc)}")
    return GenerationError(f"{where}: copier failed: {type(exc).__name__}: {_one_line(exc)}")


def _git_error(exc: ProcessExecutionError, src: str, ref: str | None, where: str) -> GenerationError:
    url = _redact(src.removeprefix("git+"))
    stderr = exc.stderr if isinstance(exc.stderr, str) else str(exc.stderr or "")
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    important = [ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith(("fatal:", "error:"))]
    detail = _redact_text("; ".join(important or lines[-1:]) or f"git exited with {exc.retcode}", src)
    if outbound.REFUSED_TRANSPORT in stderr:
        return GenerationError(
            f"{where}: template repository {url} has a submodule on another origin; only submodules on "
            "the template's own scheme, host and port are fetched (rule submodules): move it there"
        )
    if "redirect" in stderr.lower() or re.search(r"returned error: 30\d", stderr):
        return GenerationError(
            f"{where}: template repository {url} answered with a redirect; redirects are not followed "
            "(rule redirects): use the URL it redirects to, if the policy allows it"
        )
    if _GIT_AUTH.search(stderr):
        anonymous = (
            "" if "@" in urlsplit(src.removeprefix("git+")).netloc else "; templates are cloned anonymously"
        )
        return GenerationError(
            f"{where}: template repository {url} needs credentials or refused them ({detail}){anonymous}"
        )
    if _GIT_NOT_FOUND.search(stderr):
        return GenerationError(f"{where}: template repository {url} not found ({detail})")
    if _GIT_BAD_REF.search(stderr):
        return GenerationError(f"{where}: ref {ref!r} not found in template repository {url} ({detail})")
    if _GIT_UNREACHABLE.search(stderr):
        return SourceUnavailable(f"{where}: template repository {url} is unreachable ({detail}); will retry")
    return GenerationError(f"{where}: git failed on template repository {url}: {detail}")


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
    userinfo = urlsplit(url.removeprefix("git+")).netloc.rpartition("@")[0]
    return text.replace(userinfo, "***") if userinfo else text
