"""cookiecutter templates: `projectgen render` against `cookiecutter --no-input` on the same template.

Every template here is built in a temporary directory (and served by projectgen_dev.gitserver
when it comes from git). The outputs must be byte-identical (contents and executable bits),
apart from `.cruft.json`, which only projectgen writes (cruft writes the same file)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_generation_template import GIT_ENV, git, write_files

from projectgen.api.v1alpha1.generatedproject import GeneratedProjectSpec
from projectgen.cli import main as cli_main
from projectgen.generation.errors import GenerationError
from projectgen.generation.render import ConfigMapData, render_project
from projectgen_dev.ci import unavailable
from projectgen_dev.gitserver import GitHTTPServer

VENV_BIN = Path(sys.executable).parent
SLUG = "{{cookiecutter.project_slug}}"

COOKIECUTTER_JSON = {
    "project_name": "Demo Project",
    "project_slug": "{{ cookiecutter.project_name|lower|replace(' ', '_') }}",
    "license": ["MIT", "Apache-2.0"],
    "use_docker": "n",
    "authors": {"lead": "Ada"},
    "__version": "0.1.0",
    "_copy_without_render": ["raw/*", "*.jinja-example"],
    "_extensions": ["local_extensions.shout", "cookiecutter.extensions.SlugifyExtension"],
}

LOCAL_EXTENSIONS = """\
from cookiecutter.utils import simple_filter


@simple_filter
def shout(value):
    return str(value).upper() + "!"
"""

PRE_PROMPT = """\
import json

with open("cookiecutter.json") as fh:
    context = json.load(fh)
context["greeting"] = "added by pre_prompt"
with open("cookiecutter.json", "w") as fh:
    json.dump(context, fh)
"""

PRE_GEN = """\
import sys

slug = "{{ cookiecutter.project_slug }}"
if not slug.isidentifier():
    print(f"ERROR: {slug!r} is not a valid Python package name", file=sys.stderr)
    sys.exit(1)
with open("pre-gen.txt", "w") as fh:
    fh.write("pre_gen_project ran for " + slug + "\\n")
"""

POST_GEN = """\
#!/bin/sh
set -e
echo "post_gen_project for {{ cookiecutter.project_slug }}" > post-gen.txt
{% if cookiecutter.use_docker == 'n' %}rm Dockerfile{% endif %}
"""


def cookiecutter_template(**overrides: Any) -> dict[str | bytes, str | bytes]:
    """A template with every feature: derived and private variables, a choice, a dict, an
    extension of its own and a built-in one, `_copy_without_render`, binary and executable
    files, a rendered directory name and both kinds of hooks."""
    return {
        "cookiecutter.json": json.dumps({**COOKIECUTTER_JSON, **overrides}, indent=2),
        "local_extensions.py": LOCAL_EXTENSIONS,
        "hooks/pre_prompt.py": PRE_PROMPT,
        "hooks/pre_gen_project.py": PRE_GEN,
        "hooks/post_gen_project.sh": POST_GEN,
        f"{SLUG}/README.md": (
            "# {{ cookiecutter.project_name }}\n{{ cookiecutter.project_name|shout }}\n"
            "slug: {{ cookiecutter.project_name|slugify }}\nlicense: {{ cookiecutter.license }}\n"
            "lead: {{ cookiecutter.authors.lead }} version {{ cookiecutter.__version }}\n"
            "{{ cookiecutter.authors|jsonify }}\n{{ cookiecutter.greeting }}\n"
        ),
        f"{SLUG}/{SLUG}/__init__.py": '__version__ = "{{ cookiecutter.__version }}"\n',
        f"{SLUG}/raw/keep.txt": "{{ left as is }}\n",
        f"{SLUG}/config.jinja-example": "{{ also left }}\n",
        f"{SLUG}/Dockerfile": "FROM python:3.12\n",
        f"{SLUG}/logo.png": b"\x89PNG\r\n\x1a\n\x00{{ binary }}\xff",
        f"{SLUG}/run.sh": "#!/bin/sh\necho {{ cookiecutter.project_slug }}\n",
        "README.md": "The template's own README, not part of the project.\n",
    }


def build(root: Path, files: dict[str | bytes, str | bytes]) -> Path:
    write_files(root, files)
    run_sh = root / SLUG / "run.sh"
    if run_sh.exists():
        os.chmod(run_sh, 0o755)  # noqa: S103
    return root


def publish_template(
    server: GitHTTPServer, work: Path, name: str, files: dict[str | bytes, str | bytes]
) -> str:
    """The template as a repository on the git server (executable bits kept), tagged v1.0.0."""
    src = build(work / name, files)
    git(src, "init", "-q", "-b", "main")
    git(src, "add", "-A")
    git(src, "commit", "-qm", "template")
    git(src, "tag", "v1.0.0")
    git(src, "push", "-q", "--tags", str(server.create_bare(f"tpl/{name}")), "main")
    return server.url(f"tpl/{name}")


def plain_cookiecutter(template: Path, out: Path, *args: str, home: Path | None = None) -> Path:
    """`cookiecutter --no-input` as a user runs it: the project directory it wrote."""
    exe = VENV_BIN / "cookiecutter"
    if not exe.exists():
        unavailable("the cookiecutter command is not installed (pip install -e .)")
    home = home or out.parent / "cc-home"
    home.mkdir(exist_ok=True)
    env = {**GIT_ENV, "HOME": str(home)}
    env.pop("COOKIECUTTER_CONFIG", None)
    subprocess.run(
        [str(exe), "--no-input", "-o", str(out), str(template), *args],
        env=env,
        check=True,
        capture_output=True,
    )
    (project,) = out.iterdir()
    return project


def snapshot(root: Path, *, without: tuple[str, ...] = (".cruft.json",)) -> dict[str, tuple[bytes, bool]]:
    """Every file under `root`: its bytes and whether it is executable."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in without:
            found[rel] = (path.read_bytes(), bool(path.stat().st_mode & 0o100))
    return found


def spec(**template: Any) -> GeneratedProjectSpec:
    return GeneratedProjectSpec.model_validate(
        {"projectRef": {"name": "p"}, "sources": [{"template": template}]}
    )


def cli_render(tmp_path: Path, document: dict[str, Any], *configmaps: dict[str, Any]) -> Path:
    """`projectgen render` on a GeneratedProject file (and ConfigMap files): the output directory."""
    gp = tmp_path / "gp.yaml"
    gp.write_text(yaml.safe_dump_all([document, *configmaps]))
    out = tmp_path / "projectgen-out"
    assert cli_main(["render", "-f", str(gp), "-o", str(out)]) == 0
    return out


def generated_project(template: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "projectgen.io/v1alpha1",
        "kind": "GeneratedProject",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"projectRef": {"name": "p"}, "sources": [{"template": template}]},
    }


def configmap_of(name: str, root: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """A ConfigMap holding the template under `root` (binaryData for binary files) and its items."""
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    items = []
    for i, path in enumerate(sorted(p for p in root.rglob("*") if p.is_file())):
        key = f"f{i}"
        content = path.read_bytes()
        try:
            data[key] = content.decode("utf-8")
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(content).decode()
        items.append({"key": key, "path": path.relative_to(root).as_posix()})
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
    if binary:
        cm["binaryData"] = binary
    return cm, items


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with GitHTTPServer(tmp_path_factory.mktemp("git")) as srv:
        yield srv


# -- the same bytes as cookiecutter --no-input ------------------------------------------------------


def test_git_template_renders_as_cookiecutter_no_input(tmp_path: Path, server: GitHTTPServer) -> None:
    files = cookiecutter_template()
    url = publish_template(server, tmp_path / "src", "cc-full", files)
    template = build(tmp_path / "plain-template", files)
    expected = plain_cookiecutter(template, tmp_path / "plain-out", "project_name=Widget Factory")

    out = cli_render(
        tmp_path, generated_project({"url": url, "ref": "v1.0.0", "data": {"project_name": "Widget Factory"}})
    )

    assert expected.name == "widget_factory"
    got = snapshot(out)
    assert got == snapshot(expected)
    # Every feature did what cookiecutter's documentation says, in both.
    readme = got["README.md"][0].decode()
    assert readme.startswith("# Widget Factory\nWIDGET FACTORY!\nslug: widget-factory\nlicense: MIT\n")
    assert "lead: Ada version 0.1.0" in readme and "added by pre_prompt" in readme
    assert got["raw/keep.txt"][0] == b"{{ left as is }}\n"
    assert got["config.jinja-example"][0] == b"{{ also left }}\n"
    assert got["logo.png"][0] == b"\x89PNG\r\n\x1a\n\x00{{ binary }}\xff"
    assert got["run.sh"] == (b"#!/bin/sh\necho widget_factory\n", True)
    assert got["pre-gen.txt"][0] == b"pre_gen_project ran for widget_factory\n"
    assert got["post-gen.txt"][0] == b"post_gen_project for widget_factory\n"
    assert "Dockerfile" not in got and "widget_factory/__init__.py" in got
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path / "src/cc-full", capture_output=True, text=True, check=True
    ).stdout.strip()
    cruft = json.loads((out / ".cruft.json").read_text())
    assert cruft == {
        "template": url,
        "commit": commit,
        "checkout": "v1.0.0",
        "context": {
            "cookiecutter": {
                "project_name": "Widget Factory",
                "project_slug": "widget_factory",
                "license": "MIT",
                "use_docker": "n",
                "authors": {"lead": "Ada"},
                "__version": "0.1.0",
                "_copy_without_render": ["raw/*", "*.jinja-example"],
                "_extensions": ["local_extensions.shout", "cookiecutter.extensions.SlugifyExtension"],
                "greeting": "added by pre_prompt",
                "_template": url,
                "_commit": commit,
            }
        },
        "directory": None,
    }


def test_configmap_template_in_a_directory(tmp_path: Path) -> None:
    """A template in a directory of its ConfigMap (cookiecutter's --directory), detected as
    cookiecutter; `subdirectory` then picks a directory of the project."""
    files = {f"templates/service/{k!s}": v for k, v in cookiecutter_template().items()}
    files["README.md"] = "several templates live here\n"
    root = build(tmp_path / "plain-template", files)
    os.chmod(root / "templates/service" / SLUG / "run.sh", 0o755)  # noqa: S103
    expected = plain_cookiecutter(
        root, tmp_path / "plain-out", "--directory", "templates/service", "use_docker=y"
    )
    cm, items = configmap_of("tpl", root)
    template = {"configMap": {"name": "tpl", "items": items}, "directory": "templates/service"}
    out = cli_render(tmp_path, generated_project({**template, "data": {"use_docker": "y"}}), cm)

    # ConfigMap files are never executable: contents only.
    want = {k: v[0] for k, v in snapshot(expected).items()}
    assert {k: v[0] for k, v in snapshot(out).items()} == want
    assert "Dockerfile" in want
    cruft = json.loads((out / ".cruft.json").read_text())
    assert cruft["template"] == "configmap-tpl" and cruft["commit"] is None
    assert cruft["directory"] == "templates/service"

    sub = render_project(
        spec(**template, subdirectory="demo_project"),
        tmp_path / "sub" / "tree",
        configmaps={
            "tpl": ConfigMapData(
                data=cm["data"], binary_data={k: base64.b64decode(v) for k, v in cm["binaryData"].items()}
            )
        }.get,
    )
    assert [f.path for f in sub.manifest.files] == ["__init__.py"]


# -- what is refused, and how it says so -------------------------------------------------------------


def configmap_spec(files: dict[str, str], **fields: Any) -> tuple[GeneratedProjectSpec, Any]:
    items = [{"key": f"f{i}", "path": path} for i, path in enumerate(files)]
    data = {f"f{i}": content for i, content in enumerate(files.values())}
    return (
        spec(configMap={"name": "tpl", "items": items}, **fields),
        {"tpl": ConfigMapData(data=data, binary_data={})}.get,
    )


def render_error(tmp_path: Path, files: dict[str, str], **fields: Any) -> str:
    the_spec, configmaps = configmap_spec(files, **fields)
    with pytest.raises(GenerationError) as err:
        render_project(the_spec, tmp_path / "stage" / "tree", configmaps=configmaps)
    assert err.value.permanent
    return str(err.value)


SIMPLE = {
    "cookiecutter.json": '{"project_slug": "demo"}',
    f"{SLUG}/README.md": "# {{ cookiecutter.project_slug }}\n",
}


def test_engine_is_detected_and_recorded(tmp_path: Path) -> None:
    the_spec, configmaps = configmap_spec(SIMPLE)
    result = render_project(the_spec, tmp_path / "a" / "tree", configmaps=configmaps)
    assert [e.wire() for e in result.engines] == [{"source": 0, "engine": "cookiecutter"}]
    copier_files = {"copier.yml": "name: {type: str, default: x}\n", "README.md.jinja": "{{ name }}\n"}
    the_spec, configmaps = configmap_spec(copier_files)
    result = render_project(the_spec, tmp_path / "b" / "tree", configmaps=configmaps)
    assert [e.wire() for e in result.engines] == [{"source": 0, "engine": "copier"}]


def test_both_needs_engine_and_neither_is_copier(tmp_path: Path) -> None:
    both = {**SIMPLE, "copier.yml": "name: {type: str, default: x}\n"}
    assert render_error(tmp_path / "1", both) == (
        "sources[0].template: the template has both copier.yml (copier) and cookiecutter.json "
        "(cookiecutter); set engine to copier or cookiecutter"
    )
    # Neither: copier, as every template rendered before engines were chosen.
    the_spec, configmaps = configmap_spec({"README.md": "x"})
    result = render_project(the_spec, tmp_path / "2" / "tree", configmaps=configmaps)
    assert [e.wire() for e in result.engines] == [{"source": 0, "engine": "copier"}]
    assert render_error(tmp_path / "3", {"sub/README.md": "x"}, directory="sub") == (
        "sources[0].template.directory: 'sub' holds no cookiecutter.json; not a cookiecutter template"
    )
    the_spec, configmaps = configmap_spec(both, engine="cookiecutter")
    result = render_project(the_spec, tmp_path / "4" / "tree", configmaps=configmaps)
    assert sorted(f.path for f in result.manifest.files) == [".cruft.json", "README.md"]


def test_two_top_level_directories_fail(tmp_path: Path) -> None:
    files = {
        **SIMPLE,
        "hooks/post_gen_project.py": "import os\nos.mkdir('../second')\n",
    }
    assert render_error(tmp_path, files) == (
        "sources[0].template: the cookiecutter template rendered 2 top-level entries ('demo', 'second'); "
        "it must render exactly one directory (such as {{cookiecutter.project_slug}}), whose contents "
        "become the project"
    )


def test_failing_hook_names_itself_and_its_stderr(tmp_path: Path) -> None:
    files = cookiecutter_template()
    message = render_error(
        tmp_path,
        {str(k): v for k, v in files.items() if isinstance(v, str)},
        data={"project_slug": "not-an-identifier"},
    )
    assert message.startswith("sources[0].template: hook pre_gen_project.py exited with code 1"), message
    assert "ERROR: 'not-an-identifier' is not a valid Python package name" in message
    shell = {**SIMPLE, "hooks/post_gen_project.sh": "#!/bin/sh\necho 'disk says no' >&2\nexit 3\n"}
    message = render_error(tmp_path / "sh", shell)
    assert "hook post_gen_project.sh exited with code 3" in message and "disk says no" in message


def test_hooks_skip_and_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = {**SIMPLE, "hooks/post_gen_project.py": "open('hooked.txt', 'w').write('x')\n"}
    the_spec, configmaps = configmap_spec(files, hooks="Skip")
    result = render_project(the_spec, tmp_path / "skip" / "tree", configmaps=configmaps)
    assert sorted(f.path for f in result.manifest.files) == [".cruft.json", "README.md"]
    assert result.warnings == [
        "sources[0].template: the template's hooks were skipped (hooks is Skip): post_gen_project.py"
    ]
    assert render_error(tmp_path / "fail", files, hooks="Fail") == (
        "sources[0].template: the template has hooks (post_gen_project.py) and hooks is Fail: set hooks "
        "to Run to run them in the sandbox, or Skip to render without them"
    )
    the_spec, configmaps = configmap_spec(files)
    result = render_project(the_spec, tmp_path / "run" / "tree", configmaps=configmaps)
    assert sorted(f.path for f in result.manifest.files) == [".cruft.json", "README.md", "hooked.txt"]


def test_template_expressions_are_sandboxed_as_copiers_are(tmp_path: Path) -> None:
    """Plain cookiecutter renders an expression that reaches Python internals; projectgen renders
    cookiecutter templates with Jinja's sandbox, as copier's."""
    files = {**SIMPLE, f"{SLUG}/leak.txt": "{{ cookiecutter.__class__.__mro__[-1].__subclasses__()|length }}"}
    build(tmp_path / "plain", files)
    plain = plain_cookiecutter(tmp_path / "plain", tmp_path / "plain-out")
    assert int((plain / "leak.txt").read_text()) > 10
    message = render_error(tmp_path / "pg", files)
    assert message.startswith(
        "sources[0].template: the template's Jinja expression was refused by the Jinja sandbox"
    )


def test_unknown_extension_and_undefined_variable(tmp_path: Path) -> None:
    files = {"cookiecutter.json": '{"project_slug": "demo", "_extensions": ["nowhere.Ext"]}'}
    files[f"{SLUG}/x"] = "x"
    message = render_error(tmp_path / "ext", files)
    assert "nowhere" in message and "_extensions names a module" in message
    files = {**SIMPLE, f"{SLUG}/README.md": "{{ cookiecutter.missing }}"}
    message = render_error(tmp_path / "undef", files)
    assert message.startswith("sources[0].template: cookiecutter:") and "missing" in message


# -- cruft works on the result ---------------------------------------------------------------------


def test_cruft_diff_and_update_work_on_the_result(tmp_path: Path, server: GitHTTPServer) -> None:
    cruft = VENV_BIN / "cruft"
    if not cruft.exists():
        unavailable("cruft is not installed (pip install -e '.[test]')")
    # cruft renders with cookiecutter's generate_files, which runs no pre_prompt hook.
    files = {k: v for k, v in cookiecutter_template(greeting="hello").items() if k != "hooks/pre_prompt.py"}
    url = publish_template(server, tmp_path / "src", "cc-cruft", files)
    out = cli_render(
        tmp_path, generated_project({"url": url, "ref": "main", "data": {"project_name": "Alpha"}})
    )
    project = tmp_path / "alpha"
    shutil.copytree(out, project, symlinks=True)
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "generated")
    env = {**GIT_ENV, "HOME": str(tmp_path / "home")}

    diff = subprocess.run(
        [str(cruft), "diff", "--exit-code"], cwd=project, env=env, capture_output=True, text=True
    )
    assert diff.returncode == 0, diff.stdout + diff.stderr

    # The template moves on; `cruft update` brings the change to the project.
    src = tmp_path / "src" / "cc-full-next"
    shutil.copytree(tmp_path / "src" / "cc-cruft", src)
    write_files(src, {f"{SLUG}/CHANGELOG.md": "# {{ cookiecutter.project_name }} changes\n"})
    git(src, "add", "-A")
    git(src, "commit", "-qm", "changelog")
    git(src, "push", "-q", str(server.repo_path("tpl/cc-cruft")), "main")
    update = subprocess.run(
        [str(cruft), "update", "-y", "--skip-apply-ask"], cwd=project, env=env, capture_output=True, text=True
    )
    assert update.returncode == 0, update.stdout + update.stderr
    assert (project / "CHANGELOG.md").read_text() == "# Alpha changes\n"


def test_limits_apply_to_cookiecutter_renders(tmp_path: Path) -> None:
    files = {**SIMPLE, **{f"{SLUG}/f{i}.txt": str(i) for i in range(10)}}
    message = render_error(tmp_path, files, limits={"outputFiles": 5})
    assert message.startswith("sources[0].template: the template wrote more than the limit of 5 files")


def test_cruft_json_never_holds_the_urls_credentials(tmp_path: Path, server: GitHTTPServer) -> None:
    url = publish_template(server, tmp_path / "src", "cc-secret", dict(SIMPLE))
    with_credentials = url.replace("http://", "http://robot:s3cret-token@")
    result = render_project(spec(url=with_credentials), tmp_path / "stage" / "tree", configmaps={}.get)
    cruft = (tmp_path / "stage" / "tree" / ".cruft.json").read_text()
    assert "s3cret-token" not in cruft and "robot" not in cruft
    assert json.loads(cruft)["template"] == url
    assert [e.wire() for e in result.engines] == [{"source": 0, "engine": "cookiecutter"}]
