"""copier, inside the render sandbox: the checkout the parent fetched -> files in the output dir.

This module runs in the confined child only (`sandbox/child.py`). It renders as
`copier copy --trust --skip-tasks` does: Jinja extensions load (the template's own modules
included: the sandbox is what makes that safe), `_migrations` are ignored (copier runs them on
`update` only), `_tasks` run only with `tasks: Run`, inside the sandbox (`sandbox/programs.py`:
no network, the exec allowlist), as `copier copy --trust` runs them. The answers file names the
template's URL and commit, as copier's would: the parent resolved them with git before the child
started (the child has no network).

- `_copier_conf.src_path` / `dst_path` name the template URL and `.`, not the staging paths.
- Filters that read the host (`expandvars`, `expanduser`, `realpath`, `fileglob`) are removed.
- `_external_data` may name files of the template or the project only (copier checks this only
  without `--trust`): a file elsewhere is refused, naming the key, with Landlock or without.
- The clock is fixed (`freeze_clock`) so the same spec renders the same bytes.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path, PurePath
from typing import Any

from copier._main import Worker
from copier._settings import SettingsModel
from copier._template import Template
from copier._template import Task
from copier._tools import cast_to_bool
from copier._types import LazyDict, Phase
from copier._user_data import CAST_STR_TO_NATIVE, load_answersfile_data
from copier.errors import CopierError, ExtensionNotFoundError, ForbiddenPathError
from packaging.version import InvalidVersion, Version

from projectgen.generation.sandbox import programs

HOST_FILTERS = ("expandvars", "expanduser", "realpath", "fileglob")
"""Filters copier adds (from jinja2-ansible-filters) that read the host's environment variables
and file system."""


class RenderFailed(Exception):
    """A message for status: what was wrong with the template or its answers."""


class _FetchedTemplate(Template):
    """A template the parent already checked out: no clone, no git (the child cannot run it)."""

    checkout: Path = Path()
    revision: dict[str, Any] | None = None

    @cached_property
    def local_abspath(self) -> Path:
        return self.checkout

    @cached_property
    def vcs(self) -> Any:
        return "git" if self.revision else None

    @cached_property
    def commit(self) -> str | None:
        return (self.revision or {}).get("commit")

    @cached_property
    def commit_hash(self) -> str | None:
        return (self.revision or {}).get("commit_hash")

    @cached_property
    def version(self) -> Version | None:
        text = (self.revision or {}).get("version")
        try:
            return Version(text) if text else None
        except InvalidVersion:
            return None

    @cached_property
    def git_index_modes(self) -> Any:
        return {}  # modes come from the checkout itself (git wrote them from its index)


class _Worker(Worker):
    """copier's Worker on a fetched checkout, minus the host filters and the git index sync
    (a `git config` subprocess per file, for a destination that is never a git repository)."""

    checkout: Path = Path()
    revision: dict[str, Any] | None = None

    @cached_property
    def template(self) -> Template:
        template = _FetchedTemplate(url=str(self.src_path), ref=self.resolved_vcs_ref)
        template.checkout = self.checkout
        template.revision = self.revision
        return template

    @cached_property
    def jinja_env(self) -> Any:
        env = super().jinja_env
        for name in HOST_FILTERS:
            env.filters.pop(name, None)
        return env

    def _render_context(self) -> Any:
        context = super()._render_context()
        conf = context.get("_copier_conf")
        if conf is not None:
            conf["src_path"] = str(self.src_path)  # a URL: PurePath would fold its '//'

            conf["dst_path"] = PurePath(".")
        return context

    def _sync_git_index_executable_bit(self, dst_relpath: Path, src_mode: int) -> None:
        return None

    def _execute_tasks(self, tasks: Sequence[Task]) -> None:
        """copier's tasks, as `copier copy --trust` runs them (the command, its condition, working
        directory and extra variables rendered; the variables also in the environment), each through
        `programs.run`: a failure names the task and ends with its stderr."""
        for task in tasks:
            extra = {f"_{k}": v for k, v in task.extra_vars.items()}
            extra["_copier_operation"] = "copy"
            if not cast_to_bool(self._render_value(task.condition, extra)):
                continue
            if isinstance(task.cmd, str):
                cmd: str | list[str] = self._render_string(task.cmd, extra)
            else:
                cmd = [self._render_string(str(part), extra) for part in task.cmd]
            cwd = (self.subproject.local_abspath / self._render_string(str(task.working_directory), extra)).absolute()
            env = {k[1:].upper(): str(v) for k, v in extra.items()}
            shown = cmd if isinstance(cmd, str) else " ".join(cmd)
            try:
                programs.run(cmd, what=f"task {shown[:300]!r}", cwd=str(cwd), env=env, shell=isinstance(cmd, str))
            except (programs.ProgramFailed, programs.ProgramsRefused) as exc:
                raise RenderFailed(str(exc)) from None

    def _external_data(self) -> Any:
        """copier's `_external_data`, each file held to the template and the project."""
        roots = (self.checkout.resolve(), self.dst_path.resolve())

        def load(name: str, path: str) -> Any:
            with Phase.use(Phase.UNDEFINED):
                rendered = self._render_string(path)
            if not any((self.dst_path / rendered).resolve().is_relative_to(root) for root in roots):
                raise RenderFailed(
                    f"_external_data.{name}: {rendered[:200]!r} is outside the template and the project; "
                    "a template may read only its own files"
                )
            return load_answersfile_data(self.dst_path, rendered, warn_on_missing=True)

        def loader(name: str, path: str) -> Callable[[], Any]:
            return lambda: load(name, path)

        return LazyDict({name: loader(name, path) for name, path in self.template.external_data.items()})


def freeze_clock(at: dt.datetime) -> None:
    """Make every clock a template can reach say `at`: `time.time`, `datetime.now/today`,
    `date.today` and arrow's `now/utcnow` (what jinja2-time and copier's `strftime` filter use).
    The process runs with TZ=UTC."""
    at = at.astimezone(dt.UTC)
    seconds = at.timestamp()
    localtime, gmtime, strftime = time.localtime, time.gmtime, time.strftime
    setattr(time, "time", lambda: seconds)  # noqa: B010
    setattr(time, "time_ns", lambda: int(seconds * 1_000_000_000))  # noqa: B010
    setattr(time, "localtime", lambda secs=None: localtime(seconds if secs is None else secs))  # noqa: B010
    setattr(time, "gmtime", lambda secs=None: gmtime(seconds if secs is None else secs))  # noqa: B010
    setattr(time, "strftime", lambda fmt, t=None: strftime(fmt, localtime(seconds) if t is None else t))  # noqa: B010

    class FrozenDateTime(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Any:
            return at.astimezone(tz) if tz is not None else at.replace(tzinfo=None)

        @classmethod
        def utcnow(cls) -> Any:
            return at.replace(tzinfo=None)

        @classmethod
        def today(cls) -> Any:
            return at.replace(tzinfo=None)

    class FrozenDate(dt.date):
        @classmethod
        def today(cls) -> Any:
            return at.date()

    setattr(dt, "datetime", FrozenDateTime)  # noqa: B010
    setattr(dt, "date", FrozenDate)  # noqa: B010
    try:
        import arrow  # optional: installed with jinja2-time
    except ImportError:
        return
    frozen = arrow.Arrow.fromdatetime(at)

    def now(cls: Any, tzinfo: Any = None) -> Any:
        return frozen.to(tzinfo) if tzinfo is not None else frozen.to("local")

    def utcnow(cls: Any) -> Any:
        return frozen

    setattr(arrow.Arrow, "now", classmethod(now))  # noqa: B010
    setattr(arrow.Arrow, "utcnow", classmethod(utcnow))  # noqa: B010


def _check_answers(template: Template, data: dict[str, Any]) -> None:
    """A wrong-type answer names its question (copier says only `invalid literal for int()`)."""
    for name, answer in data.items():
        question = template.questions_data.get(name)
        if not isinstance(question, dict):
            continue
        type_name = str(question.get("type"))
        if type_name not in CAST_STR_TO_NATIVE or type_name in ("str", "yaml", "json"):
            continue
        cast: Callable[[Any], Any] = CAST_STR_TO_NATIVE[type_name]
        try:
            if isinstance(answer, str):
                cast(answer)
            elif type_name in ("int", "float") and (
                isinstance(answer, bool) or not isinstance(answer, int | float)
            ):
                raise ValueError
        except (ValueError, TypeError):
            raise RenderFailed(
                f"data.{name}: {answer!r} is not a valid answer to question {name!r} of type {type_name}"
            ) from None


def describe_tasks(template: Template) -> list[str]:
    names = []
    for task in template.tasks:
        cmd = task.cmd
        names.append(cmd if isinstance(cmd, str) else " ".join(str(c) for c in cmd))
    return names


def render(request: dict[str, Any], *, extensions_allowed: bool, why_not: str) -> dict[str, Any]:
    """Render the request's checkout into its output directory; returns what the parent reports.

    Raises RenderFailed with a message for status."""
    data = copy.deepcopy(request.get("data") or {})
    try:
        with _Worker(
            src_path=request["src"],
            dst_path=Path(request["out"]),
            data=data,
            vcs_ref=request.get("ref"),
            settings=SettingsModel(),
            user_defaults={},
            defaults=True,
            overwrite=True,
            quiet=True,
            unsafe=True,
            skip_tasks=request.get("tasks") != "Run",
            cleanup_on_error=False,
        ) as worker:
            worker.checkout = Path(request["checkout"])
            worker.revision = request.get("revision")
            template = worker.template
            if template.jinja_extensions and not extensions_allowed:
                raise RenderFailed(
                    f"the template loads Jinja extensions ({', '.join(template.jinja_extensions)}), which run "
                    f"code; that needs Landlock, and {why_not}; only templates without "
                    "_jinja_extensions render here"
                )
            tasks = describe_tasks(template)
            if tasks and request.get("tasks") == "Fail":
                raise RenderFailed(
                    f"the template has _tasks ({'; '.join(tasks)}) and tasks is Fail; projectgen runs no "
                    "tasks: set tasks to Skip to render without them, or Run to run them in the sandbox"
                )
            if tasks and request.get("tasks") == "Run" and not extensions_allowed:
                raise RenderFailed(
                    f"the template has _tasks ({'; '.join(tasks)}) and tasks is Run; running programs needs "
                    f"Landlock, and {why_not}; set tasks to Skip to render without them"
                )
            _check_answers(template, data)
            worker.run_copy()
            # Rendered as copier renders them for `copier update` (`Worker.match_skip`): a pattern
            # may name a file through the answers. The export's merge leaves those files to the team.
            skip = [worker._render_string(p) for p in worker.all_skip_if_exists]
    except RenderFailed:
        raise
    except ExtensionNotFoundError as exc:
        named = re.search(r"No module named '([^']+)'", str(exc))
        module = getattr(exc.__cause__, "name", None) or (named.group(1) if named else _one_line(exc))
        raise RenderFailed(
            f"the template's Jinja extension module {module!r} is not installed in the operator image; "
            "ask the operator's administrator to add the package that provides it, or use a template "
            "without it"
        ) from None
    except ForbiddenPathError as exc:
        raise RenderFailed(
            f"copier refused a path outside the project or the template ({_one_line(exc)})"
        ) from None
    except MemoryError:
        raise
    except (CopierError, ValueError) as exc:
        raise RenderFailed(f"copier: {_one_line(exc)}") from None
    except OSError:
        raise
    except Exception as exc:
        raise RenderFailed(f"copier failed: {type(exc).__name__}: {_one_line(exc)}") from None
    skipped = tasks if request.get("tasks") != "Run" else []
    return {"tasks": skipped, "skipIfExists": skip}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:2000] if text else type(exc).__name__
