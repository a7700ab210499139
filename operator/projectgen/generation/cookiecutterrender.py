"""cookiecutter, inside the render sandbox: the checkout the parent fetched -> one project directory.

This module runs in the confined child only (`sandbox/child.py`). It renders as
`cookiecutter --no-input` does, with `data` as the extra context, through cookiecutter's own
entry point (`cookiecutter.main.cookiecutter`), so `_copy_without_render`, `_extensions` (the
template's own modules included), private variables, nested templates and binary files behave
as cookiecutter's documentation says. What differs, and why:

- **Jinja sandbox.** copier renders with Jinja's `SandboxedEnvironment`; cookiecutter with a plain
  `Environment`. cookiecutter's one environment factory (`cookiecutter.utils.create_env_with_context`,
  used for files, names, context values and hooks) builds `_SandboxedStrictEnvironment` here, so a
  template expression cannot reach Python internals (`''.__class__.__mro__`) in either engine. Code
  the template brings (`_extensions`, hooks) runs as code: the kernel sandbox is what confines it.
- **Hooks** (`pre_prompt`, `pre_gen_project`, `post_gen_project`; `.py` or `.sh`) run as programs
  inside the sandbox (`sandbox.programs`): a `.py` hook with the render's interpreter, any other
  with the interpreter its `#!` line names (the kernel would do the same; nothing in the box may be
  executed itself). A failing hook fails the render naming the hook and the last lines of its
  stderr. `template.hooks: Skip` renders with cookiecutter's `accept_hooks=False`.
- **`.cruft.json`** is written at the project's root as `cruft create` writes it (template URL,
  commit, checkout, context, directory), so `cruft update` and projectgen's Day-two updates work.
- No user configuration is read (`default_config`); cookiecutter's replay file lands in the box's
  scratch directory, where it is read back for the context `.cruft.json` records.

Private cookiecutter names used, each covered by a test that fails when it changes:
`cookiecutter.utils.StrictEnvironment` (the sandboxed environment), `cookiecutter.hooks.run_hook`
and `cookiecutter.hooks.run_script` (the hook's name and how it is started).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cookiecutter.hooks as cc_hooks
import cookiecutter.utils as cc_utils
from cookiecutter.environment import StrictEnvironment
from cookiecutter.exceptions import CookiecutterException, FailedHookException, UnknownExtension
from cookiecutter.main import cookiecutter
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from projectgen.generation.sandbox import programs
from projectgen.generation.templaterender import RenderFailed

CRUFT_FILE = ".cruft.json"
HOOK_NAMES = ("pre_prompt", "pre_gen_project", "post_gen_project")
"""cookiecutter's hooks, in the order it runs them."""
CONTEXT_PATHS = ("_output_dir", "_repo_dir", "_checkout", "_template")
"""Context entries cookiecutter fills with local paths; `.cruft.json` records the URL instead."""


class _SandboxedStrictEnvironment(StrictEnvironment, SandboxedEnvironment):
    """cookiecutter's StrictEnvironment (its extensions, StrictUndefined) on Jinja's sandbox."""


class HookFailed(FailedHookException):
    """A hook exited non-zero: its name and the tail of its stderr, for status."""


def find_hooks(template: Path) -> list[str]:
    """The hook scripts cookiecutter would run (its own rule: `hooks/<name>.<any>`, no backup
    files), by file name."""
    hooks = template / "hooks"
    if not hooks.is_dir():
        return []
    return sorted(name for name in os.listdir(hooks) if cc_hooks.valid_hook(name, Path(name).stem))


def _argv(script: str) -> list[str]:
    """How the kernel would start `script`, with the program named explicitly (nothing in the box
    has EXECUTE): a `.py` hook with this interpreter, else the `#!` line's interpreter."""
    if script.endswith(".py"):
        return [sys.executable, script]
    with open(script, "rb") as fh:
        first = fh.readline(256)
    if not first.startswith(b"#!"):
        raise FailedHookException("Hook script failed, might be an empty file or missing a shebang")
    words = first[2:].decode("utf-8", "replace").split()
    if not words:
        raise FailedHookException("Hook script failed, might be an empty file or missing a shebang")
    if os.path.basename(words[0]) == "env" and len(words) > 1:
        words = words[1:]  # `#!/usr/bin/env bash`: the program on PATH
    return [*words, script]


@contextlib.contextmanager
def _cookiecutter_in_sandbox() -> Iterator[None]:
    """Point cookiecutter's environment factory at the sandboxed environment and its hook runner at
    `programs.run`, naming each hook; undone afterwards."""
    current: list[str] = []

    def run_hook(hook_name: str, project_dir: Any, context: dict[str, Any]) -> None:
        current.append(hook_name)
        try:
            original_run_hook(hook_name, project_dir, context)
        finally:
            current.pop()

    def run_script(script_path: str, cwd: Any = ".") -> None:
        name = current[-1] if current else Path(script_path).stem  # pre_prompt runs the script itself
        shown = f"{name}{Path(script_path).suffix}"
        try:
            programs.run(_argv(script_path), what=f"hook {shown}", cwd=str(cwd))
        except programs.ProgramsRefused as exc:
            raise RenderFailed(str(exc)) from None
        except programs.ProgramFailed as exc:
            raise HookFailed(str(exc)) from None

    original_env, original_run_hook, original_run_script = (
        cc_utils.StrictEnvironment,
        cc_hooks.run_hook,
        cc_hooks.run_script,
    )
    replaced: list[tuple[Any, str, Any]] = [
        (cc_utils, "StrictEnvironment", _SandboxedStrictEnvironment),
        (cc_hooks, "run_hook", run_hook),
        (cc_hooks, "run_script", run_script),
    ]
    for module, name, value in replaced:
        setattr(module, name, value)
    try:
        yield
    finally:
        cc_utils.StrictEnvironment = original_env
        cc_hooks.run_hook = original_run_hook
        cc_hooks.run_script = original_run_script


def render(request: dict[str, Any], *, extensions_allowed: bool, why_not: str) -> dict[str, Any]:
    """Render the request's checkout into its output directory (one project directory, with
    `.cruft.json`); returns what the parent reports. Raises RenderFailed with a message for status.
    Without Landlock (`extensions_allowed` false) a template that brings code is refused, as a
    copier template with `_jinja_extensions` is; hooks then fail as programs do (`programs.run`)."""
    template = Path(request["checkout"])
    directory = request.get("directory")
    root = template / directory if directory else template
    if not (root / "cookiecutter.json").is_file():
        where = f"{directory}/" if directory else ""
        raise RenderFailed(f"the template has no {where}cookiecutter.json; not a cookiecutter template")
    extensions = _extensions(root)
    if extensions and not extensions_allowed:
        raise RenderFailed(
            f"the template loads Jinja extensions ({', '.join(extensions)}), which run code; that needs "
            f"Landlock, and {why_not}; only templates without _extensions render here"
        )
    hooks = find_hooks(root)
    policy = request.get("hooks") or "Run"
    if hooks and policy == "Fail":
        raise RenderFailed(
            f"the template has hooks ({', '.join(hooks)}) and hooks is Fail: set hooks to Run to run them "
            "in the sandbox, or Skip to render without them"
        )
    data = request.get("data") or {}
    replay = Path(request["tmp"], ".cookiecutter_replay")
    scratch = Path(request["tmp"], ".cookiecutter_cache")
    try:
        with _cookiecutter_in_sandbox():
            project = cookiecutter(
                os.path.relpath(template, request["cwd"]),
                no_input=True,
                extra_context=data,
                output_dir=request["out"],
                # No user configuration; cookiecutter's own directories in the box's scratch.
                default_config={"replay_dir": str(replay), "cookiecutters_dir": str(scratch)},
                directory=directory,
                accept_hooks=policy == "Run",
            )
    except RenderFailed:
        raise
    except HookFailed as exc:
        raise RenderFailed(str(exc)) from None
    except UnknownExtension as exc:
        raise RenderFailed(
            f"cookiecutter: {_one_line(exc)}: _extensions names a module that is neither the template's "
            "own nor installed in the operator image"
        ) from None
    except SecurityError as exc:
        raise RenderFailed(
            f"the template's Jinja expression was refused by the Jinja sandbox ({_one_line(exc)})"
        ) from None
    except MemoryError:
        raise
    except (CookiecutterException, TemplateError, ValueError) as exc:
        raise RenderFailed(f"cookiecutter: {_message(exc)}") from None
    except OSError:
        raise
    except Exception as exc:
        raise RenderFailed(f"cookiecutter failed: {type(exc).__name__}: {_one_line(exc)}") from None
    context = _replayed_context(replay)
    _write_cruft(Path(project), request, context)
    skipped = hooks if policy == "Skip" else []
    return {"tasks": [], "skipIfExists": [], "hooksSkipped": skipped}


def _extensions(root: Path) -> list[str]:
    """cookiecutter.json's `_extensions` (a malformed file is left for cookiecutter to report)."""
    try:
        with open(root / "cookiecutter.json", encoding="utf-8") as fh:
            values = json.load(fh)
    except ValueError:
        return []
    found = values.get("_extensions") if isinstance(values, dict) else None
    return [str(e) for e in found] if isinstance(found, list) else []


def _replayed_context(replay: Path) -> dict[str, Any]:
    """The context cookiecutter rendered with, as its replay file holds it."""
    found = sorted(replay.glob("*.json"))
    if not found:
        raise RenderFailed("cookiecutter wrote no replay file; cannot record the context in .cruft.json")
    with open(found[-1], encoding="utf-8") as fh:
        replayed = json.load(fh)
    values = replayed.get("cookiecutter") if isinstance(replayed, dict) else None
    if not isinstance(values, dict):
        raise RenderFailed("cookiecutter's replay file holds no context")
    return values


def cruft_state(request: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """`.cruft.json` as `cruft create` writes it: the context cruft would have rendered with
    (`_template` the URL, `_commit` the commit; no local paths)."""
    revision = request.get("revision") or {}
    commit = revision.get("commit_hash")
    context = {k: v for k, v in values.items() if k not in CONTEXT_PATHS}
    url = request.get("template_url") or request["src"]
    context["_template"] = url
    context["_commit"] = commit
    return {
        "template": url,
        "commit": commit,
        "checkout": request.get("checkout_ref"),
        "context": {"cookiecutter": context},
        "directory": request.get("directory"),
    }


def _write_cruft(project: Path, request: dict[str, Any], values: dict[str, Any]) -> None:
    text = json.dumps(cruft_state(request, values), ensure_ascii=False, indent=2, separators=(",", ": "))
    (project / CRUFT_FILE).write_text(text + "\n", encoding="utf-8")


def _message(exc: BaseException) -> str:
    """cookiecutter's message; an undefined variable names the file it was rendering."""
    text = _one_line(exc)
    error = getattr(exc, "error", None)
    if error is not None and str(error) not in text:
        text = f"{text}: {_one_line(error)}"
    return re.sub(r"\s+", " ", text)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:2000] if text else type(exc).__name__
