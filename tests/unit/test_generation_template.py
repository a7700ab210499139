"""Template sources: copier over git smart HTTP (devtools.gitserver) and from a ConfigMap."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from projectgen import outbound
from projectgen.api.v1alpha1.generatedproject import GeneratedProjectSpec
from projectgen.generation.errors import GenerationError, SourceUnavailable
from projectgen.generation.manifest import Manifest
from projectgen.generation.render import ConfigMapData, RenderResult, render_project
from projectgen.outbound.policy import Limits
from projectgen_dev.gitserver import GitHTTPServer

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}

COPIER_YML = """\
project_name:
  type: str
  help: Name of the project
license:
  type: str
  default: MIT
"""


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True)


def write_files(root: Path, files: dict[str | bytes, str | bytes]) -> None:
    for name, content in files.items():
        path = os.path.join(os.fsencode(root), name.encode() if isinstance(name, str) else name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(content.encode() if isinstance(content, str) else content)


def publish(
    server: GitHTTPServer,
    work: Path,
    name: str,
    versions: list[tuple[str | None, dict[str | bytes, str | bytes]]],
    symlinks: dict[str, str] | None = None,
) -> str:
    """A template repository: one commit per version (tagged when a tag is given), pushed."""
    src = work / name
    src.mkdir(parents=True)
    git(src, "init", "-q", "-b", "main")
    for tag, files in versions:
        write_files(src, files)
        for link, target in (symlinks or {}).items():
            os.symlink(target, src / link)
        git(src, "add", "-A")
        git(src, "commit", "-qm", f"version {tag}")
        if tag:
            git(src, "tag", tag)
    bare = server.create_bare(f"tpl/{name}")
    git(src, "push", "-q", "--tags", str(bare), "main")
    return server.url(f"tpl/{name}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHTTPServer]:
    with GitHTTPServer(tmp_path_factory.mktemp("git")) as srv:
        yield srv


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("templates")


@pytest.fixture(scope="module")
def basic(server: GitHTTPServer, work: Path) -> str:
    v1 = {
        "copier.yml": COPIER_YML,
        "{{project_name}}/README.md.jinja": "# {{project_name}} v1\n",
        "{{_copier_conf.answers_file}}.jinja": "{{ _copier_answers|to_nice_yaml }}",
        "scripts/run.sh": "#!/bin/sh\necho hi\n",
        "docs/guide.md": "guide\n",
    }
    v2 = {"{{project_name}}/README.md.jinja": "# {{project_name}} v2 ({{license}})\n"}
    url = publish(server, work, "basic", [("v1.0.0", v1), ("v2.0.0", v2), (None, {"unreleased.txt": "x"})])
    os.chmod(work / "basic" / "scripts/run.sh", 0o755)  # noqa: S103
    git(work / "basic", "commit", "-qam", "exec")  # after the last tag: not rendered by default
    git(work / "basic", "push", "-q", str(server.repo_path("tpl/basic")), "main")
    return url


def template(**fields: Any) -> GeneratedProjectSpec:
    return GeneratedProjectSpec.model_validate(
        {"projectRef": {"name": "p"}, "sources": [{"template": fields}]}
    )


def render(
    tmp_path: Path, spec: GeneratedProjectSpec, configmaps: dict[str, ConfigMapData] | None = None
) -> RenderResult:
    return render_project(spec, tmp_path / "stage" / "tree", configmaps=(configmaps or {}).get)


def files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}


def everything(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def outside_tree(root: Path) -> list[str]:
    """What a render left under `root` besides its tree (a failed render may leave a partial
    tree, which the caller discards; nothing else may remain)."""
    return [p for p in everything(root) if not p.startswith("stage/tree/")]


# -- git templates ---------------------------------------------------------------------------------


def copier_clones() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("copier._vcs.clone")}


def test_template_from_git_latest_tag(tmp_path: Path, basic: str) -> None:
    clones = copier_clones()
    result = render(tmp_path, template(url=basic, data={"project_name": "demo"}))
    assert copier_clones() <= clones
    out = files(tmp_path / "stage" / "tree")
    assert out["demo/README.md"] == "# demo v2 (MIT)\n"
    assert "unreleased.txt" not in out
    assert "_commit: v2.0.0" in out[".copier-answers.yml"]
    assert f"_src_path: {basic}" in out[".copier-answers.yml"]
    assert {f.path: f.type for f in result.manifest.files}["demo/README.md"] == "markdown"
    # nothing left beside the tree: copier's clone, cache and output are gone
    assert everything(tmp_path) == [
        "stage",
        "stage/tree",
        *(f"stage/tree/{p}" for p in everything(tmp_path / "stage" / "tree")),
    ]


def test_template_ref_and_subdirectory(tmp_path: Path, basic: str) -> None:
    result = render(
        tmp_path, template(url=basic, ref="v1.0.0", subdirectory="demo", data={"project_name": "demo"})
    )
    assert files(tmp_path / "stage" / "tree") == {"README.md": "# demo v1\n"}
    assert [f.path for f in result.manifest.files] == ["README.md"]


HEAVY_BLOB = 8 << 20


@pytest.fixture(scope="module")
def heavy_history(server: GitHTTPServer, work: Path) -> str:
    """A template whose v1 carried 8 MiB of incompressible assets that v2 deleted."""
    v1 = {"copier.yml": "{}\n", "README.md": "v1\n", "assets/video.bin": os.urandom(HEAVY_BLOB)}
    url = publish(server, work, "heavy", [("v1.0.0", v1)])
    git(work / "heavy", "rm", "-q", "assets/video.bin")
    (work / "heavy" / "README.md").write_text("v2\n")
    git(work / "heavy", "commit", "-qam", "v2")
    git(work / "heavy", "tag", "v2.0.0")
    git(work / "heavy", "push", "-q", "--tags", str(server.repo_path("tpl/heavy")), "main")
    return url


def test_template_history_is_not_downloaded(
    tmp_path: Path, server: GitHTTPServer, heavy_history: str
) -> None:
    """The clone is partial: the latest version costs its own size, not its history's, and an
    older ref still gets its files (fetched on checkout, through the same pinned, capped git)."""
    g = outbound.Guard(
        outbound.parse_policy("templates: [{urlPrefix: 'http://'}]\ninternal: [{cidr: 127.0.0.0/8}]\n", "t"),
        "team-a",
        limits=Limits(template_max_bytes=HEAVY_BLOB // 2),
    )
    before = server.bytes_sent
    result = render_project(template(url=heavy_history), tmp_path / "latest", configmaps={}.get, guard=g)
    assert files(tmp_path / "latest") == {"README.md": "v2\n"}
    assert [f.path for f in result.manifest.files] == ["README.md"]
    fetched = server.bytes_sent - before
    assert fetched < HEAVY_BLOB // 8, f"{fetched} bytes fetched for a template of a few bytes"

    # v1 is within reach, and still under the clone's cap: a fetch past it is stopped
    with pytest.raises(GenerationError, match="the template repository"):
        render_project(template(url=heavy_history, ref="v1.0.0"), tmp_path / "v1", configmaps={}.get, guard=g)
    roomy = dataclasses.replace(g, limits=Limits())
    result = render_project(
        template(url=heavy_history, ref="v1.0.0"), tmp_path / "v1", configmaps={}.get, guard=roomy
    )
    assert (tmp_path / "v1" / "assets/video.bin").stat().st_size == HEAVY_BLOB
    assert sorted(f.path for f in result.manifest.files) == ["README.md", "assets/video.bin"]


def test_template_keeps_executable_bit(tmp_path: Path, basic: str) -> None:
    result = render(tmp_path, template(url=basic, ref="main", data={"project_name": "x"}))
    run = next(f for f in result.manifest.files if f.path == "scripts/run.sh")
    assert run.executable and os.stat(tmp_path / "stage" / "tree" / "scripts/run.sh").st_mode & 0o777 == 0o755
    assert "unreleased.txt" in files(tmp_path / "stage" / "tree")


def test_template_render_is_deterministic(tmp_path: Path, basic: str) -> None:
    a = render_project(template(url=basic, data={"project_name": "d"}), tmp_path / "a", configmaps={}.get)
    b = render_project(template(url=basic, data={"project_name": "d"}), tmp_path / "b", configmaps={}.get)
    assert a.manifest.content_hash == b.manifest.content_hash


def test_template_layered_under_inline(tmp_path: Path, basic: str) -> None:
    spec = GeneratedProjectSpec.model_validate(
        {
            "projectRef": {"name": "p"},
            "sources": [
                {"template": {"url": basic, "data": {"project_name": "demo"}}},
                {"inline": {"files": [{"path": "demo/README.md", "content": "mine"}]}},
            ],
        }
    )
    render(tmp_path, spec)
    assert files(tmp_path / "stage" / "tree")["demo/README.md"] == "mine"


def test_missing_answer_is_permanent(tmp_path: Path, basic: str) -> None:
    with pytest.raises(GenerationError) as err:
        render(tmp_path, template(url=basic))
    assert err.value.permanent
    assert err.value.message.startswith("sources[0].template: ") and "project_name" in err.value.message


def test_unknown_ref_is_permanent(tmp_path: Path, basic: str) -> None:
    with pytest.raises(GenerationError) as err:
        render(tmp_path, template(url=basic, ref="v9.9.9", data={"project_name": "x"}))
    assert err.value.permanent
    assert "ref 'v9.9.9' not found" in err.value.message


def test_missing_repository_is_permanent(tmp_path: Path, server: GitHTTPServer) -> None:
    with pytest.raises(GenerationError) as err:
        render(tmp_path, template(url=server.url("tpl/nope")))
    assert err.value.permanent
    assert "not found" in err.value.message and "tpl/nope" in err.value.message


def test_repository_needing_credentials_is_permanent(tmp_path: Path) -> None:
    with GitHTTPServer(tmp_path / "private", tokens={"secret"}) as private:
        private.create_bare("o/tpl")
        with pytest.raises(GenerationError) as err:
            render(tmp_path / "r", template(url=private.url("o/tpl")))
    assert err.value.permanent
    assert "needs credentials" in err.value.message


def test_connection_refused_is_temporary(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceUnavailable) as err:
        render(tmp_path, template(url=f"http://127.0.0.1:{port}/tpl.git"))
    assert not err.value.permanent
    assert "unreachable" in err.value.message


def test_server_error_is_temporary(tmp_path: Path) -> None:
    class Failing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(SourceUnavailable, match="503"):
            render(tmp_path, template(url=f"http://127.0.0.1:{httpd.server_address[1]}/tpl.git"))
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_rendered_name_traversal_stays_inside(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    url = publish(
        server,
        work,
        "evil-name",
        [("v1", {"copier.yml": "evil:\n  type: str\n  default: ok\n", "{{ evil }}.txt": "pwned\n"})],
    )
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    for answer in ("../x", "../../x", "a/../../x", "/tmp/x"):
        stage = sandbox / "stage"
        with pytest.raises(GenerationError) as err:
            render_project(template(url=url, data={"evil": answer}), stage / "tree", configmaps={}.get)
        assert err.value.permanent
        assert outside_tree(sandbox) == ["stage", "stage/tree"], answer
        assert not any(p.name.startswith("x") for p in sandbox.rglob("*")), answer
        shutil.rmtree(stage)
    assert everything(tmp_path) == ["sandbox"]


def test_symlinks_in_template_output(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    """In-tree links are kept (test_template_symlinks.py has the rest); links out are refused."""
    secret = work / "secret.txt"
    secret.write_text("operator secret\n")
    base = {"copier.yml": "_preserve_symlinks: true\n", "README.md": "hi\n"}
    inside = publish(server, work, "link-inside", [("v1", base)], symlinks={"link": "README.md"})
    kept = render(tmp_path / "a", template(url=inside))
    assert [(f.path, f.type, f.target) for f in kept.manifest.files if f.target] == [
        ("link", "symlink", "README.md")
    ]
    assert os.readlink(tmp_path / "a" / "stage" / "tree" / "link") == "README.md"
    outside = publish(server, work, "link-outside", [("v1", base)], symlinks={"leak": str(secret)})
    with pytest.raises(GenerationError, match=r"symlink 'leak' pointing outside the template"):
        render(tmp_path / "b", template(url=outside))
    assert outside_tree(tmp_path / "b") == ["stage", "stage/tree"]


def test_template_symlink_cannot_leak_files_through_include(
    tmp_path: Path, server: GitHTTPServer, work: Path
) -> None:
    secret = work / "secret2.txt"
    secret.write_text("operator secret\n")
    url = publish(
        server,
        work,
        "include-leak",
        [("v1", {"copier.yml": "_subdirectory: sub\n", "sub/out.txt.jinja": "{% include 'leak' %}"})],
        symlinks={"leak": str(secret)},
    )
    with pytest.raises(GenerationError, match="pointing outside the template"):
        render(tmp_path, template(url=url))
    assert outside_tree(tmp_path) == ["stage", "stage/tree"]
    assert not any("secret" in p.read_text() for p in (tmp_path / "stage" / "tree").rglob("*") if p.is_file())


def test_non_utf8_file_name_refused(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    url = publish(server, work, "latin1", [("v1", {"copier.yml": "a: 1\n", b"caf\xe9.txt": "x"})])
    with pytest.raises(GenerationError, match=r"file name 'caf\\\\xe9\.txt' is not valid UTF-8"):
        render(tmp_path, template(url=url))


# -- ConfigMap templates and unsafe features ---------------------------------------------------------


def configmap_template(
    name: str, copier_yml: str, **fields: Any
) -> tuple[GeneratedProjectSpec, dict[str, ConfigMapData]]:
    cm = ConfigMapData(
        data={
            "copier.yml": copier_yml,
            "readme": "# {{ project_name }}\n",
            "answers": "{{ _copier_answers|to_nice_yaml }}",
            "logo": "",
        },
        binary_data={"logo.bin": b"\x89PNG\x00\x01"},
    )
    items = [
        {"key": "copier.yml", "path": "copier.yml"},
        {"key": "readme", "path": "{{project_name}}/README.md.jinja"},
        {"key": "answers", "path": "{{_copier_conf.answers_file}}.jinja"},
        {"key": "logo.bin", "path": "assets/logo.bin"},
    ]
    spec = template(configMap={"name": name, "items": items}, **fields)
    return spec, {name: cm}


def test_template_from_configmap(tmp_path: Path) -> None:
    spec, cms = configmap_template("tpl", COPIER_YML, data={"project_name": "demo"})
    result = render(tmp_path, spec, cms)
    out = tmp_path / "stage" / "tree"
    assert everything(out) == [".copier-answers.yml", "assets", "assets/logo.bin", "demo", "demo/README.md"]
    assert (out / "demo/README.md").read_text() == "# demo\n"
    assert (out / "assets/logo.bin").read_bytes() == b"\x89PNG\x00\x01"
    answers = (out / ".copier-answers.yml").read_text()
    assert "_src_path: configmap-tpl" in answers and "project_name: demo" in answers
    again = render_project(spec, tmp_path / "again", configmaps=cms.get)
    assert again.manifest.content_hash == result.manifest.content_hash
    assert everything(tmp_path) == [
        "again",
        *(f"again/{p}" for p in everything(tmp_path / "again")),
        "stage",
        "stage/tree",
        *(f"stage/tree/{p}" for p in everything(out)),
    ]


def test_template_configmap_missing_is_temporary(tmp_path: Path) -> None:
    spec, _ = configmap_template("tpl", COPIER_YML)
    with pytest.raises(
        SourceUnavailable, match=r"sources\[0\]\.template\.configMap: ConfigMap 'tpl' not found"
    ):
        render(tmp_path, spec)


def test_invalid_copier_yml_is_permanent(tmp_path: Path) -> None:
    spec, cms = configmap_template("tpl", "project_name: [unclosed\n")
    with pytest.raises(GenerationError, match=r"^sources\[0\]\.template: copier") as err:
        render(tmp_path, spec, cms)
    assert err.value.permanent


def test_template_syntax_error_is_permanent(tmp_path: Path) -> None:
    spec, cms = configmap_template("tpl", COPIER_YML, data={"project_name": "x"})
    cms["tpl"].data["readme"] = "{% if %}"
    with pytest.raises(GenerationError, match=r"^sources\[0\]\.template: copier") as err:
        render(tmp_path, spec, cms)
    assert err.value.permanent


def test_the_render_records_the_templates_skip_if_exists_patterns(tmp_path: Path) -> None:
    """copier's `_skip_if_exists`, rendered with the answers as `copier update` renders them, goes
    into the manifest (and survives its file) for the export's merge; the contentHash ignores it."""
    copier_yml = COPIER_YML + "_skip_if_exists: ['.env', '{{ project_name }}/local.yml']\n"
    spec, cms = configmap_template("tpl", copier_yml, data={"project_name": "demo"})
    result = render(tmp_path, spec, cms)

    assert result.manifest.skip_if_exists == [".env", "demo/local.yml"]
    result.manifest.dump(tmp_path / "manifest.json")
    loaded = Manifest.load(tmp_path / "manifest.json")
    assert loaded.skip_if_exists == [".env", "demo/local.yml"]
    plain, plain_cms = configmap_template("tpl", COPIER_YML, data={"project_name": "demo"})
    assert render_project(plain, tmp_path / "plain", configmaps=plain_cms.get).manifest.content_hash == (
        loaded.content_hash
    )
