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


TASKS_YML = """\
project_name:
  type: str
  default: demo
_tasks:
  - "git init -q && git config user.name > who.txt || echo nobody > who.txt"
  - ["sh", "-c", "echo {{ project_name }} > task-list.txt"]
  - command: "echo skipped > never.txt"
    when: "{{ false }}"
  - "printf '%s' \\"$COPIER_OPERATION\\" > env.txt"
"""


def test_tasks_run_in_the_sandbox_with_tasks_run(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    url = make(server, work, "tasks", {"copier.yml": TASKS_YML, "README.md.jinja": "{{ project_name }}\n"})
    result, tree = render(tmp_path, url, tasks="Run", data={"project_name": "hello"})
    assert (tree / "task-list.txt").read_text() == "hello\n"
    assert (tree / "env.txt").read_text() == "copy"
    assert (tree / "who.txt").read_text() == "nobody\n"  # no git identity in the box
    assert not (tree / "never.txt").exists()
    assert not any("_tasks were skipped" in n for n in result.warnings)


def test_tasks_are_skipped_by_default(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    url = make(server, work, "tasks-skip", {"copier.yml": TASKS_YML, "README.md.jinja": "{{ project_name }}\n"})
    result, tree = render(tmp_path, url)
    assert not (tree / "task-list.txt").exists()
    assert any("_tasks were skipped" in n for n in result.warnings)


def failing(tmp_path: Path, server: GitHTTPServer, work: Path, name: str, task: str, **kw: object) -> str:
    yml = f"_tasks:\n  - {json.dumps(task)}\n"
    url = make(server, work, name, {"copier.yml": yml, "a.txt": "a\n"})
    with pytest.raises(GenerationError) as caught:
        render(tmp_path, url, tasks="Run", limits=kw.get("limits", HOSTILE))  # type: ignore[arg-type]
    return str(caught.value)


def test_a_failing_task_fails_the_source_with_its_stderr(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    message = failing(tmp_path, server, work, "task-fails", "echo first >&2; echo 'it broke' >&2; exit 3")
    assert """task "echo first >&2; echo 'it broke' >&2; exit 3" exited with code 3""" in message
    assert message.endswith("last lines of its stderr: first | it broke")


def test_a_task_that_needs_the_network_says_so(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    # The template's own git server, on loopback: still no socket for a task.
    message = failing(tmp_path, server, work, "task-network", f"git clone {server.url('tasks')} cloned")
    assert "seems to need the network, which programs in the render sandbox do not have" in message


# -- hostile programs: each fails its own render only --------------------------------------------------


def program(code: str) -> dict[str, str]:
    """A template whose extension runs `code` (Python, in the render) and fails with what it printed."""
    return extension(code)


def test_a_program_off_the_allowlist_is_refused(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    message = failing(tmp_path, server, work, "exec-off-list", "id -u > uid.txt")
    assert "exited with code 126" in message or "exited with code 2" in message
    assert "Permission denied" in message and "run only python, sh, bash, git" in message
    url = make(server, work, "exec-off-list-ext", extension("import subprocess\nsubprocess.run(['id'])"))
    with pytest.raises(GenerationError, match="the sandbox refused to run 'id': a template may run only python"):
        render(tmp_path, url, limits=HOSTILE)


def test_what_the_render_writes_is_not_executable(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    message = failing(tmp_path, server, work, "exec-own", "printf '#!/bin/sh\\ntrue\\n' > x.sh; chmod +x x.sh; ./x.sh")
    assert "Permission denied" in message


def test_programs_cannot_open_sockets_read_secrets_or_write_outside(
    tmp_path: Path, server: GitHTTPServer, work: Path
) -> None:
    secret = tmp_path / "outside-secret"
    secret.write_text("s3cret")
    outside = tmp_path / "written-outside"
    code = f"""
import subprocess, sys
def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True)
    return [p.returncode, p.stderr.strip()[-200:]]
out['socket'] = run([sys.executable, '-c', 'import socket; socket.socket()'])
out['token'] = run(['cat', '/var/run/secrets/kubernetes.io/serviceaccount/token'])
out['secret'] = run(['cat', {str(secret)!r}])
out['write'] = run(['sh', '-c', 'echo x > {outside}'])
out['setsid'] = run([sys.executable, '-c', 'import os; os.setsid()'])
out['git_name'] = run(['git', 'config', 'user.name'])
out['env'] = json.loads(subprocess.run(
    [sys.executable, '-c', 'import os, json; print(json.dumps(dict(os.environ)))'], capture_output=True, text=True
).stdout)
"""
    before = outside_state(tmp_path)
    _, tree = render(tmp_path, make(server, work, "hostile-probe", extension(code)), limits=HOSTILE)
    probe = json.loads((tree / "probe.json").read_text())
    assert probe["socket"][0] == 1 and "PermissionError" in probe["socket"][1]
    assert probe["token"][0] == 1
    assert probe["secret"][0] == 1 and "Permission denied" in probe["secret"][1]
    assert probe["write"][0] == 2 and "Permission denied" in probe["write"][1]
    assert probe["setsid"][0] == 1 and "Operation not permitted" in probe["setsid"][1]
    assert probe["git_name"] == [1, ""]
    env = probe["env"]
    assert sorted(env) == sorted(programs.environment("h", "/b/c"))
    assert env["HOME"].startswith(str(tmp_path / "stage")) and env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert outside_state(tmp_path) == before


def render_server_pid() -> int:
    runner.start_server()
    pid = runner.server_pid()
    assert pid is not None
    return pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_program_cannot_signal_the_render_server(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    server_pid = render_server_pid()
    code = """
import subprocess
p = subprocess.run(['sh', '-c', 'kill -KILL %d' % os.getppid()], capture_output=True, text=True)
out['kill'] = [p.returncode, p.stderr.strip()]
"""
    _, tree = render(tmp_path, make(server, work, "signal-server", extension(code)), limits=HOSTILE)
    probe = json.loads((tree / "probe.json").read_text())
    assert probe["kill"][0] != 0 and "Operation not permitted" in probe["kill"][1]
    assert alive(server_pid) and runner.server_pid() == server_pid


def test_a_program_that_kills_its_parent_fails_only_its_render(
    tmp_path: Path, server: GitHTTPServer, work: Path
) -> None:
    server_pid = render_server_pid()
    message = failing(tmp_path, server, work, "signal-parent", "kill -KILL $PPID")
    assert "killed by a signal (SIGKILL)" in message or "was ended by signal 9" in message
    assert alive(server_pid)


DAEMON = """
import subprocess, sys
code = "import os, time\\nif os.fork(): os._exit(0)\\nopen('daemon.pid', 'w').write(str(os.getpid()))\\ntime.sleep(600)"
subprocess.run([sys.executable, '-c', code], cwd=os.environ['HOME'])
for _ in range(100):
    if os.path.exists(os.path.join(os.environ['HOME'], 'daemon.pid')):
        break
    time.sleep(0.05)
pid = open(os.path.join(os.environ['HOME'], 'daemon.pid')).read()
open('daemon-pid.txt', 'w').write(pid) if False else None
out['daemon'] = int(pid)
"""


def test_a_daemon_a_render_leaves_is_killed(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    render_server_pid()
    _, tree = render(tmp_path, make(server, work, "daemon", extension("import time\n" + DAEMON)), limits=HOSTILE)
    pid = json.loads((tree / "probe.json").read_text())["daemon"]
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), "the daemon outlived its render"


FORK_BOMB = "f() { f & f & wait; }; f"


def test_a_fork_bomb_fails_its_render_only_and_nothing_survives(
    tmp_path: Path, server: GitHTTPServer, work: Path
) -> None:
    server_pid = render_server_pid()
    limits = Limits(**{**HOSTILE.to_json(), "wall_seconds": 4, "processes": 64})
    other: dict[str, object] = {}
    plain = make(server, work, "plain", {"copier.yml": "name:\n  default: x\n", "a.txt.jinja": "{{ name }}\n"})

    def render_plain() -> None:
        time.sleep(1)
        started = time.monotonic()
        _, tree = render(tmp_path / "plain", plain)
        other["took"] = time.monotonic() - started
        other["text"] = (tree / "a.txt").read_text()

    (tmp_path / "plain").mkdir()
    thread = threading.Thread(target=render_plain)
    thread.start()
    message = failing(tmp_path, server, work, "fork-bomb", FORK_BOMB, limits=limits)
    thread.join(60)
    # It runs into its process limit (or, failing that, its wall-clock limit).
    assert "it reached the render's limit on processes" in message or "wall-clock limit of 4 s" in message
    assert other["text"] == "x\n" and float(other["took"]) < 3  # type: ignore[arg-type]
    deadline = time.monotonic() + 10
    while children_of(server_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert children_of(server_pid) == []


def children_of(parent: int) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(pid))
            except OSError:
                continue
    return found


def test_allowlist_names_real_programs() -> None:
    allowed = programs.allowed_programs()
    assert os.path.realpath("/bin/sh") in allowed
    assert programs.interpreter() in allowed
    assert not any(p.endswith("/id") or p.endswith("/curl") for p in allowed)
    assert confine.write_rights() & confine.ll.FSAccess.EXECUTE == 0
    assert signal.SIGKILL  # the module is used for kill checks above
