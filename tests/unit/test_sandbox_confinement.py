"""Real copier templates in the render sandbox: what copier renders, projectgen renders (compared
file for file with `copier copy --trust --skip-tasks` run here), and hostile templates fail alone,
within their limits, changing nothing outside their output."""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_generation_template import GIT_ENV, git, publish, server, template, work

from projectgen.generation.errors import GenerationError, SourceUnavailable
from projectgen.generation.render import RenderResult, TemplateOptions, render_project
from projectgen.generation.sandbox import Limits, RenderCancelled, confine, programs, runner
from projectgen_dev.gitserver import GitHTTPServer

__all__ = ["server", "work"]  # module fixtures shared with test_generation_template

CLOCK = dt.datetime(2024, 2, 29, 12, 30, tzinfo=dt.UTC)
COPIER = str(Path(sys.executable).with_name("copier"))
MIB = 1024 * 1024
HOSTILE = Limits(
    cpu_seconds=3,
    wall_seconds=30,
    memory_bytes=768 * MIB,
    file_size_bytes=8 * MIB,
    output_bytes=32 * MIB,
    output_files=500,
    open_files=64,
    processes=4096,
)


def render(
    tmp_path: Path, url: str, *, limits: Limits | None = None, **fields: Any
) -> tuple[RenderResult, Path]:
    tree = tmp_path / "stage" / "tree"
    options = TemplateOptions(limits=limits or Limits(), clock=CLOCK, forbidden=(str(tmp_path / "data"),))
    result = render_project(template(url=url, **fields), tree, configmaps={}.get, templates=options)
    return result, tree


def copier_copy(tmp_path: Path, url: str, data: dict[str, Any], ref: str | None = None) -> Path:
    dst = tmp_path / "copier-out"
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(data))
    args = [COPIER, "copy", "--trust", "--skip-tasks", "--defaults", "--quiet", "--data-file", str(data_file)]
    if ref:
        args += ["--vcs-ref", ref]
    env = {**GIT_ENV, "HOME": str(tmp_path / "home"), "COPIER_CACHE_DIR": str(tmp_path / "copier-cache")}
    src = url if url.endswith(".git") else f"git+{url}"  # as projectgen names it in _src_path
    subprocess.run([*args, src, str(dst)], env=env, check=True, capture_output=True, cwd=tmp_path)
    return dst


def snapshot(root: Path, ignore: frozenset[str] = frozenset()) -> dict[str, tuple[bytes, bool]]:
    """Every file under root: bytes and executable bit (VCS metadata left out)."""
    found = {}
    for directory, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in names:
            full = Path(directory, name)
            rel = full.relative_to(root).as_posix()
            if name == ".git" or rel in ignore:
                continue
            found[rel] = (full.read_bytes(), bool(full.stat().st_mode & 0o100))
    return found


def make(server: GitHTTPServer, work: Path, name: str, files: dict[str, str], tag: str = "v1.0.0") -> str:
    return publish(server, work, name, [(tag, files)])  # type: ignore[arg-type]


# -- the features of real templates, compared with copier -------------------------------------------

FEATURES_YML = """\
_jinja_extensions:
  - copier_templates_extensions.TemplateExtensionLoader
  - extensions/context.py:ContextUpdater
  - extensions/filters.py:ShoutExtension
  - jinja2_time.TimeExtension
_tasks:
  - "touch {marker}"
  - ["touch", "{marker}-2"]
_migrations:
  - version: v9
    before:
      - "touch {marker}-migration"
project_name:
  type: str
  validator: "{{% if not project_name %}}required{{% endif %}}"
use_docs:
  type: bool
  default: true
docs_tool:
  type: str
  default: mkdocs
  when: "{{{{ use_docs }}}}"
module_name:
  type: str
  default: "{{{{ project_name | lower | replace('-', '_') }}}}"
port:
  type: int
  default: 8000
"""

FEATURES = {
    "extensions/context.py": (
        "from copier_templates_extensions import ContextHook\n\n\n"
        "class ContextUpdater(ContextHook):\n"
        "    def hook(self, context):\n"
        "        context['greeting'] = 'hello ' + context['project_name']\n"
    ),
    "extensions/filters.py": (
        "from jinja2.ext import Extension\n\n\n"
        "class ShoutExtension(Extension):\n"
        "    def __init__(self, environment):\n"
        "        super().__init__(environment)\n"
        "        environment.filters['shout'] = lambda s: s.upper() + '!'\n"
    ),
    "README.md.jinja": "{{ greeting }} {{ project_name | shout }} {{ module_name }} {{ port }}\n"
    "{% if use_docs %}docs: {{ docs_tool }}{% endif %}\n",
    "{% if use_docs %}docs{% endif %}/index.md.jinja": "# {{ project_name }}\n",
    "{{ module_name }}/__init__.py.jinja": "NAME = {{ project_name | tojson }}\n",
    "COPYRIGHT.jinja": "(c) {% now 'utc', '%Y-%m-%d %H:%M' %} {{ project_name }}\n",
    "{{ _copier_conf.answers_file }}.jinja": "{{ _copier_answers | to_nice_yaml }}",
}


def test_extensions_tasks_migrations_questions_match_copier(
    tmp_path: Path, server: GitHTTPServer, work: Path
) -> None:
    marker = tmp_path / "task-ran"
    url = make(server, work, "features", {"copier.yml": FEATURES_YML.format(marker=marker), **FEATURES})
    data = {"project_name": "My-App", "port": "9000"}
    result, tree = render(tmp_path, url, data=data)
    theirs = copier_copy(tmp_path, url, data)
    ours = snapshot(tree)
    assert ours["README.md"][0] == b"hello My-App MY-APP! my_app 9000\ndocs: mkdocs\n"
    assert ours["COPYRIGHT"][0] == b"(c) 2024-02-29 12:30 My-App\n"  # the generation's clock
    assert snapshot(tree, frozenset({"COPYRIGHT"})) == snapshot(theirs, frozenset({"COPYRIGHT"}))
    assert not list(tmp_path.glob("task-ran*"))  # neither tasks nor migrations ran
    assert result.warnings == [
        f"sources[0].template: the template's _tasks were skipped (set tasks to Run to run them in the sandbox): "
        f"touch {marker}; touch {marker}-2"
    ]
    # the same spec renders the same bytes (the clock is the generation's, not the wall clock)
    again, _ = render(tmp_path / "again", url, data=data)
    assert again.manifest.content_hash == result.manifest.content_hash


def test_tasks_fail_policy_names_them(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    url = make(server, work, "tasks-fail", {"copier.yml": "_tasks:\n  - make setup\n", "a.txt": "a"})
    with pytest.raises(GenerationError) as err:
        render(tmp_path, url, tasks="Fail")
    assert err.value.permanent
    assert "_tasks (make setup) and tasks is Fail" in err.value.message


def test_exclude_without_git_and_subdirectory_match_copier(
    tmp_path: Path, server: GitHTTPServer, work: Path
) -> None:
    url = make(
        server,
        work,
        "exclude",
        {
            "copier.yml": "_exclude:\n  - '*.bak'\nname:\n  default: x\n",
            "a.txt.jinja": "{{ name }}",
            "b.bak": "b",
        },
    )
    result, tree = render(tmp_path, url)
    theirs = copier_copy(tmp_path, url, {})
    assert (theirs / ".git").exists()  # copier lets the template's VCS metadata in ...
    assert not (tree / ".git").exists()  # ... projectgen never does
    assert snapshot(tree) == snapshot(theirs)
    assert str(tmp_path) not in json.dumps([f.status_record() for f in result.manifest.files])

    sub = make(
        server,
        work,
        "subdir",
        {
            "copier.yml": "_subdirectory: tpl\nname:\n  default: y\n",
            "tpl/{{ name }}.txt.jinja": "{{ name }}\n",
        },
    )
    _, tree = render(tmp_path / "sub", sub)
    assert snapshot(tree) == snapshot(copier_copy(tmp_path / "sub", sub, {}))
    assert snapshot(tree)["y.txt"] == (b"y\n", False)


def test_submodule_matches_copier(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    lib = make(server, work, "sublib", {"lib.txt": "from the submodule\n"})
    parent = work / "withsub"
    parent.mkdir()
    git(parent, "init", "-q", "-b", "main")
    (parent / "copier.yml").write_text("name:\n  default: z\n")
    (parent / "top.txt.jinja").write_text("{{ name }}\n")
    git(parent, "-c", "protocol.allow=always", "submodule", "add", "-q", lib, "vendor/lib")
    git(parent, "add", "-A")
    git(parent, "commit", "-qm", "with submodule")
    git(parent, "tag", "v1.0.0")
    git(parent, "push", "-q", "--tags", str(server.create_bare("tpl/withsub")), "main")
    url = server.url("tpl/withsub")
    _, tree = render(tmp_path, url)
    ours = snapshot(tree)
    assert ours["vendor/lib/lib.txt"][0] == b"from the submodule\n"
    assert not (tree / "vendor/lib/.git").exists()
    assert ours == snapshot(copier_copy(tmp_path, url, {}))


def test_unreachable_submodule_names_its_url(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/gone/lib.git"
    parent = work / "deadsub"
    parent.mkdir()
    git(parent, "init", "-q", "-b", "main")
    (parent / "a.txt").write_text("a")
    (parent / ".gitmodules").write_text(f'[submodule "lib"]\n\tpath = lib\n\turl = {dead}\n')
    git(parent, "add", "-A")
    # a gitlink to a commit that only the unreachable repository has
    git(parent, "update-index", "--add", "--cacheinfo", "160000", "1" * 40, "lib")
    git(parent, "commit", "-qm", "dead submodule")
    git(parent, "push", "-q", str(server.create_bare("tpl/deadsub")), "main")
    with pytest.raises(SourceUnavailable) as err:
        render(tmp_path, server.url("tpl/deadsub"), ref="main")
    assert f"template submodule {dead}" in err.value.message
    assert str(tmp_path) not in err.value.message and "/stage" not in err.value.message


def test_wrong_type_answer_names_the_question(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    url = make(server, work, "typed", {"copier.yml": "workers:\n  type: int\n  default: 2\n", "a.txt": "a"})
    with pytest.raises(GenerationError) as err:
        render(tmp_path, url, data={"workers": "abc"})
    assert err.value.message == (
        "sources[0].template: data.workers: 'abc' is not a valid answer to question 'workers' of type int"
    )


def test_missing_extension_names_the_module(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    url = make(server, work, "noext", {"copier.yml": "_jinja_extensions:\n  - cookiecutter_helpers.Ext\n"})
    with pytest.raises(GenerationError) as err:
        render(tmp_path, url)
    assert "Jinja extension module 'cookiecutter_helpers' is not installed in the operator image" in (
        err.value.message
    )


# -- hostile templates ---------------------------------------------------------------------------


def extension(code: str) -> dict[str, str]:
    """A template whose shipped extension module runs `code` as it loads, and renders `out`."""
    body = "\n".join("        " + line for line in code.splitlines())
    return {
        "copier.yml": "_jinja_extensions:\n  - copier_templates_extensions.TemplateExtensionLoader\n"
        "  - ext.py:Probe\n",
        "ext.py": "import os, socket, json\nfrom jinja2.ext import Extension\n\n\n"
        "class Probe(Extension):\n    def __init__(self, environment):\n"
        "        super().__init__(environment)\n        out = {}\n"
        f"{body}\n        environment.globals['probe'] = json.dumps(out, sort_keys=True)\n",
        "probe.json.jinja": "{{ probe }}",
    }


def outside_state(tmp_path: Path) -> dict[str, float]:
    return {
        str(p): p.stat().st_mtime for p in tmp_path.rglob("*") if "stage" not in p.relative_to(tmp_path).parts
    }


def test_probe_cannot_reach_files_sockets_processes_or_environment(
    tmp_path: Path, server: GitHTTPServer, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "outside-secret"
    secret.write_text("s3cret")
    data = tmp_path / "data" / "projects" / "other-tenant.txt"
    data.parent.mkdir(parents=True)
    data.write_text("tenant data")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "198.18.0.1")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_notreal")
    code = f"""
def attempt(name, fn):
    try:
        fn()
        out[name] = 'allowed'
    except OSError as exc:
        out[name] = 'denied: ' + (exc.strerror or str(exc))
attempt('read_secret', lambda: open({str(secret)!r}).read())
attempt('read_data_dir', lambda: open({str(data)!r}).read())
attempt('list_data_dir', lambda: os.listdir({str(data.parent)!r}))
attempt('read_token', lambda: open('/var/run/secrets/kubernetes.io/serviceaccount/token').read())
attempt('read_proc_environ', lambda: open('/proc/self/environ').read())
attempt('read_parent_mem', lambda: open('/proc/%d/environ' % os.getppid()).read())
attempt('write_outside', lambda: open({str(tmp_path / "written-outside")!r}, 'w').write('x'))
attempt('inet_socket', lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
attempt('unix_socket', lambda: socket.socket(socket.AF_UNIX))
attempt('setsid', lambda: os.setsid())
attempt('signal_parent', lambda: os.kill(os.getppid(), 0))
out['environment'] = sorted(os.environ)
"""
    url = make(server, work, "probe", extension(code))
    before = outside_state(tmp_path)
    _, tree = render(tmp_path, url, limits=HOSTILE)
    probe = json.loads((tree / "probe.json").read_text())
    denied = {k: v for k, v in probe.items() if k != "environment"}
    assert all(v.startswith("denied") for v in denied.values()), denied
    assert probe["read_secret"] == "denied: Permission denied"
    assert probe["inet_socket"] == "denied: Permission denied"
    assert probe["setsid"] == "denied: Operation not permitted"
    assert probe["environment"] == sorted(programs.environment("home", "/box"))
    assert outside_state(tmp_path) == before
    assert not (tmp_path / "written-outside").exists()


@pytest.mark.parametrize(
    ("name", "files", "message"),
    [
        (
            "loop",
            {
                "a.txt.jinja": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
            },
            "the template used more than its CPU limit of 3 s",
        ),
        ("membomb", {"a.txt.jinja": '{{ "x" * (2**32) }}'}, "went over its memory limit of 768 MiB"),
        (
            "bigfile",
            {"a.txt.jinja": '{{ "x" * (64 * 1024 * 1024) }}'},
            "wrote a file over the file size limit of 8 MiB",
        ),
    ],
)
def test_runaway_jinja_fails_within_its_limits(
    tmp_path: Path, server: GitHTTPServer, work: Path, name: str, files: dict[str, str], message: str
) -> None:
    url = make(server, work, f"hostile-{name}", files)
    before = outside_state(tmp_path)
    started = time.monotonic()
    with pytest.raises(GenerationError) as err:
        render(tmp_path, url, limits=HOSTILE)
    assert time.monotonic() - started < HOSTILE.wall_seconds
    assert err.value.permanent
    assert message in err.value.message
    assert outside_state(tmp_path) == before


def test_output_bomb_is_stopped_at_the_output_cap(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    code = """
chunk = b'x' * (1024 * 1024)
for i in range(10 * 1024):  # 10 GB, in files under the file size limit
    with open(os.path.join(os.environ['TMPDIR'], 'f%d' % (i // 4)), 'ab') as fh:
        fh.write(chunk)
"""
    url = make(server, work, "outbomb", extension(code))
    with pytest.raises(GenerationError) as err:
        render(tmp_path, url, limits=HOSTILE)
    assert "wrote more than the output limit of 32 MiB" in err.value.message


def test_fork_bomb_fails_alone(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    """The bomb reaches its process limit, and only its render fails: the render server that
    forked it lives on, nothing it started is left, and the next render completes."""
    url = make(server, work, "forkbomb", extension("while True:\n    os.fork()"))
    after = make(server, work, "after-bomb", {"a.txt": "after\n"})
    runner.start_server()
    before = runner.server_pid()
    with pytest.raises(GenerationError) as err:
        render(tmp_path, url, limits=Limits(**{**HOSTILE.to_json(), "processes": 32, "wall_seconds": 10}))
    assert "started more processes than its limit of 32" in err.value.message
    assert runner.server_pid() == before, "the render server went down with the bomb"
    assert not sandbox_children()
    _, tree = render(tmp_path / "after", after)
    assert (tree / "a.txt").read_text() == "after\n"
    assert runner.server_pid() == before


def test_wall_clock_limit_and_cancellation_kill_the_child(
    tmp_path: Path, server: GitHTTPServer, work: Path
) -> None:
    url = make(server, work, "sleeper", extension("import time\ntime.sleep(3600)"))
    with pytest.raises(GenerationError, match="did not finish within the wall-clock limit of 2 s"):
        render(tmp_path, url, limits=Limits(wall_seconds=2))
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    options = TemplateOptions(clock=CLOCK, should_stop=stop.is_set)
    with pytest.raises(RenderCancelled):
        render_project(template(url=url), tmp_path / "c" / "tree", configmaps={}.get, templates=options)
    assert not sandbox_children()


def sandbox_children() -> list[int]:
    """Render processes: the render server's children. The server must be running: without it
    there is nothing to look under, and "no child left" would hold whatever happened."""
    server = runner.server_pid()
    assert server is not None, "the render server is not running"
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == server:
                found.append(int(pid))
    return found


def test_renders_run_in_parallel(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    """A runaway render does not hold up another one (no process-wide lock)."""
    slow = make(server, work, "slow", extension("while True:\n    pass"))
    fast = make(server, work, "fast", {"a.txt": "fast\n"})
    stop = threading.Event()
    ended: list[BaseException] = []

    def runaway() -> None:
        options = TemplateOptions(limits=Limits(cpu_seconds=60, wall_seconds=90), should_stop=stop.is_set)
        try:
            render_project(
                template(url=slow), tmp_path / "slow" / "tree", configmaps={}.get, templates=options
            )
        except GenerationError as exc:
            ended.append(exc)

    runner.start_server()
    thread = threading.Thread(target=runaway)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (runaways := set(sandbox_children())):
            assert thread.is_alive() and time.monotonic() < deadline, (
                f"the runaway render never started: {ended}"
            )
            time.sleep(0.05)
        _, tree = render(tmp_path / "fast", fast)
        assert (tree / "a.txt").read_text() == "fast\n"
        # the runaway is still running beside it
        assert thread.is_alive() and runaways <= set(sandbox_children())
    finally:
        stop.set()
        thread.join(30)
    assert isinstance(ended[0], RenderCancelled)
    assert not sandbox_children()


# -- a kernel without Landlock, or a runtime profile that forbids it --------------------------

NO_LANDLOCK = """\
import errno, os, sys
import pyseccomp as sc
f = sc.SyscallFilter(defaction=sc.ALLOW)
for name in ("landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"):
    f.add_rule(sc.ERRNO(getattr(errno, os.environ["NO_LANDLOCK_ERRNO"])), name)
f.load()
os.execv(sys.argv[1], sys.argv[1:])
"""


def render_cli_without_landlock(
    tmp_path: Path, url: str, name: str, errno_name: str
) -> subprocess.CompletedProcess[str]:
    """`projectgen render` where Landlock's syscalls answer `errno_name`: ENOSYS as on a kernel
    built without it, EPERM as under a container runtime's seccomp profile that does not list them
    (a seccomp filter, inherited by every process the command starts)."""
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        "apiVersion: projectgen.io/v1alpha1\nkind: GeneratedProject\nmetadata:\n  name: demo\n"
        "  creationTimestamp: '2024-02-29T12:30:00Z'\n"
        f"spec:\n  projectRef:\n    name: demo\n  sources:\n    - template:\n        url: {url}\n"
    )
    cli = str(Path(sys.executable).with_name("projectgen"))
    return subprocess.run(
        [sys.executable, "-c", NO_LANDLOCK, cli, "render", "-f", str(spec), "-o", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_LANDLOCK_ERRNO": errno_name},
    )


@pytest.mark.parametrize(
    ("errno_name", "why"),
    [
        # the wrapper's filter is what a container runtime's profile would be: both are named
        (
            "ENOSYS",
            "needs Landlock, and this kernel lacks it, or the container's seccomp profile hides it "
            "(Function not implemented; if the node's kernel has Landlock, allow landlock_create_ruleset",
        ),
        (
            "EPERM",
            "needs Landlock, and the container's seccomp profile forbids it (Operation not permitted; "
            "allow landlock_create_ruleset, landlock_add_rule and landlock_restrict_self",
        ),
    ],
)
def test_without_landlock_plain_templates_render_and_code_is_refused(
    tmp_path: Path, server: GitHTTPServer, work: Path, errno_name: str, why: str
) -> None:
    plain = make(
        server,
        work,
        f"time-nolandlock-{errno_name}",
        {
            "copier.yml": "_jinja_extensions:\n  - jinja2_time.TimeExtension\n",
            "a.txt.jinja": "{% now 'utc', '%Y' %}",
        },
    )
    done = render_cli_without_landlock(tmp_path, plain, "time", errno_name)
    assert done.returncode == 1, done.stderr  # jinja2-time is an extension: refused too
    assert why in done.stderr
    plain = make(server, work, f"plain2-nolandlock-{errno_name}", {"a.txt.jinja": "{{ 1 + 1 }}\n"})
    done = render_cli_without_landlock(tmp_path, plain, "plain2", errno_name)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "plain2" / "a.txt").read_text() == "2\n"
    probe = make(server, work, f"probe-nolandlock-{errno_name}", extension("out['ran'] = True"))
    done = render_cli_without_landlock(tmp_path, probe, "probe", errno_name)
    assert done.returncode == 1
    assert (
        "the template loads Jinja extensions (copier_templates_extensions.TemplateExtensionLoader, ext.py:Probe)"
        in (done.stderr)
    )
    assert not (tmp_path / "probe").exists()


def test_why_landlock_is_missing_names_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(confine, "_under_seccomp", lambda: False)
    assert confine._landlock_missing(errno.ENOSYS) == "this kernel lacks it (Function not implemented)"
    assert "switched off" in (confine._landlock_missing(errno.EOPNOTSUPP) or "")
    assert (confine._landlock_missing(errno.EPERM) or "").startswith(
        "the container's seccomp profile forbids"
    )
    assert confine._landlock_missing(errno.EINVAL) is None  # a real failure: the render fails
    monkeypatch.setattr(confine, "_under_seccomp", lambda: True)
    assert "or the container's seccomp profile hides it" in (confine._landlock_missing(errno.ENOSYS) or "")


def test_a_resource_may_lower_the_limits_never_raise_them(
    tmp_path: Path, server: GitHTTPServer, work: Path
) -> None:
    url = make(
        server,
        work,
        "lowered",
        {"a.txt.jinja": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"},
    )
    operator = Limits(cpu_seconds=20, wall_seconds=60)
    with pytest.raises(GenerationError, match="CPU limit of 2 s"):
        render_project(
            template(url=url, limits={"cpuSeconds": 2}),
            tmp_path / "low" / "tree",
            configmaps={}.get,
            templates=TemplateOptions(limits=operator, clock=CLOCK),
        )
    ceiling = Limits(cpu_seconds=2, wall_seconds=60)
    with pytest.raises(GenerationError, match="CPU limit of 2 s"):
        render_project(
            template(url=url, limits={"cpuSeconds": 3600, "wallSeconds": 86400}),
            tmp_path / "high" / "tree",
            configmaps={}.get,
            templates=TemplateOptions(limits=ceiling, clock=CLOCK),
        )


def test_no_staging_path_reaches_the_project(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    url = make(
        server,
        work,
        "paths",
        {"where.txt.jinja": "{{ _copier_conf.src_path }} {{ _copier_conf.dst_path }} {{ _folder_name }}\n"},
    )
    result, tree = render(tmp_path, url)
    text = (tree / "where.txt").read_text()
    assert text == f"{url} . out\n"
    assert str(tmp_path) not in text and not result.warnings
