"""Programs a template starts (issue 25): copier extensions that call git or another program,
copier `_tasks` with `tasks: Run`, and hostile programs; everything a render starts stays in its
sandbox and dies with it."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from test_generation_template import server, work
from test_sandbox_confinement import HOSTILE, copier_copy, extension, make, outside_state, render, snapshot

from projectgen.generation.errors import GenerationError
from projectgen.generation.sandbox import Limits, confine, programs, runner
from projectgen_dev.gitserver import GitHTTPServer

__all__ = ["server", "work"]

# copier-uv / copier-pdm: the author's name from `git config`, or the template's default.
GIT_IDENTITY = {
    "copier.yml": "_jinja_extensions:\n"
    "  - copier_templates_extensions.TemplateExtensionLoader\n"
    "  - extensions.py:GitExtension\n"
    "  - extensions.py:ProgramFilter\n"
    "project_name:\n  type: str\n  default: demo\n"
    "author_fullname:\n  type: str\n  default: \"{{ 'Timothée Mazzucotelli' | git_user_name }}\"\n"
    "author_email:\n  type: str\n  default: \"{{ 'dev@pawamoy.fr' | git_user_email }}\"\n",
    "extensions.py": "import subprocess\n\nfrom jinja2.ext import Extension\n\n\n"
    "def git_user_name(default: str) -> str:\n"
    '    return subprocess.getoutput("git config user.name").strip() or default\n\n\n'
    "def git_user_email(default: str) -> str:\n"
    '    return subprocess.getoutput("git config user.email").strip() or default\n\n\n'
    "class GitExtension(Extension):\n"
    "    def __init__(self, environment):\n"
    "        super().__init__(environment)\n"
    '        environment.filters["git_user_name"] = git_user_name\n'
    '        environment.filters["git_user_email"] = git_user_email\n\n\n'
    "class ProgramFilter(Extension):\n"
    "    def __init__(self, environment):\n"
    "        super().__init__(environment)\n"
    '        environment.filters["shout"] = lambda text: subprocess.run(\n'
    '            ["tr", "a-z", "A-Z"], input=text, capture_output=True, text=True, check=True\n'
    "        ).stdout\n",
    "README.md.jinja": "# {{ project_name | shout }}\n\nby {{ author_fullname }} <{{ author_email }}>\n",
    "pyproject.toml.jinja": '[project]\nname = "{{ project_name }}"\n'
    'authors = [{name = "{{ author_fullname }}", email = "{{ author_email }}"}]\n',
    "{{_copier_conf.answers_file}}.jinja": "{{ _copier_answers|to_nice_yaml }}",
}


def test_copier_uv_pattern_renders_as_copier_does(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    url = make(server, work, "git-identity", GIT_IDENTITY)
    _, tree = render(tmp_path, url, data={"project_name": "hello"})
    expected = copier_copy(tmp_path, url, {"project_name": "hello"})
    assert snapshot(tree) == snapshot(expected)
    readme = (tree / "README.md").read_text()
    # No git identity inside the box, as on a machine without one: the template's defaults.
    assert readme == "# HELLO\n\nby Timothée Mazzucotelli <dev@pawamoy.fr>\n"
