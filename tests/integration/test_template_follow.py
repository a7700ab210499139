"""Following a template (issue 24): version constraints on template refs, recorded resolutions,
the fleet view, and the update check, on the real control plane and the project's git server."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from support import PROJECTS, create, project_body, wait_phase
from test_generatedproject import GIT_ENV

from projectgen_dev.gitserver import GitHTTPServer

FILES = {
    "copier.yml": "name:\n  type: str\n  default: svc\n",
    "{{_copier_conf.answers_file}}.jinja": "{{ _copier_answers|to_nice_yaml }}",
    "VERSION.jinja": "1.0.0\n",
}


class Template:
    """A template repository on the git server, with a working copy to tag new versions in."""

    def __init__(self, server: GitHTTPServer, name: str) -> None:
        self.server = server
        self.name = f"templates/{name}"
        self.work = server.root.parent / f"work-{name}"
        self.work.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")
        server.create_bare(self.name)
        self.url = server.url(self.name)

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=self.work, env=GIT_ENV, check=True, capture_output=True, text=True
        )
        return done.stdout

    def release(self, tag: str, files: dict[str, str] | None = None) -> None:
        for path, content in (files or {"VERSION.jinja": f"{tag.lstrip('v')}\n"}).items():
            (self.work / path).write_text(content)
        self.git("add", "-A")
        self.git("commit", "-qm", tag)
        self.git("tag", tag)
        self.git("push", "-q", "--tags", str(self.server.repo_path(self.name)), "main")

    def delete_tag(self, tag: str) -> None:
        self.git("push", "-q", str(self.server.repo_path(self.name)), f":refs/tags/{tag}")


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHTTPServer]:
    with GitHTTPServer(tmp_path_factory.mktemp("git-follow")) as server:
        yield server


def template_source(url: str, ref: str | None, **more: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"url": url, **more}
    if ref is not None:
        fields["ref"] = ref
    return {"template": fields}


def completed(api: client.ApiClient, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    obj = wait_phase(api, PROJECTS, namespace, name, "Completed", "Failed", timeout=timeout)
    assert obj["status"]["phase"] == "Completed", obj["status"].get("errorMessage")
    return obj


@pytest.mark.usefixtures("operator")
def test_a_constraint_resolves_to_the_newest_matching_tag_recorded_in_status_and_the_fleet_view(
    api_client: client.ApiClient, namespace: str, git_server: GitHTTPServer, kubectl: Callable[..., Any]
) -> None:
    tpl = Template(git_server, f"svc-{namespace}")
    (tpl.work / "copier.yml").write_text(FILES["copier.yml"])
    (tpl.work / "{{_copier_conf.answers_file}}.jinja").write_text(
        FILES["{{_copier_conf.answers_file}}.jinja"]
    )
    for tag in ("v1.0.0", "v1.2.0", "v2.0.0"):
        tpl.release(tag)
    cases = {"follows": ">=1,<2", "pinned": "v1.0.0", "latest": None, "branch": "main"}
    for name, ref in cases.items():
        create(api_client, PROJECTS, namespace, project_body(name, [template_source(tpl.url, ref)]))
    head = tpl.git("rev-parse", "HEAD").strip()
    expected = {
        "follows": ("Constraint", "v1.2.0"),
        "pinned": ("Tag", "v1.0.0"),
        "latest": ("Latest", "v2.0.0"),
        "branch": ("Branch", None),
    }
    for name, (kind, tag) in expected.items():
        status = completed(api_client, namespace, name)["status"]
        [rec] = status["templates"]
        assert (rec["kind"], rec.get("tag"), rec["url"], rec.get("ref")) == (kind, tag, tpl.url, cases[name])
        assert status["template"] == rec
        tree = Path(status["outputDirectory"]) / "tree"
        answers = (tree / ".copier-answers.yml").read_text()
        assert f"_src_path: {tpl.url}" in answers
        if tag:
            assert f"_commit: {tag}" in answers
            assert (tree / "VERSION").read_text() == tag.lstrip("v") + "\n"
            assert rec["commit"] == tpl.git("rev-parse", f"{tag}^{{commit}}").strip()
        else:
            assert rec["commit"] == head

    wide = kubectl("get", "gp", "-n", namespace, "-o", "wide", "follows").stdout.splitlines()
    header = wide[0].split()
    assert "TEMPLATE" in header and "COMMIT" in header, wide[0]
    row = wide[1].split()
    assert row[header.index("TEMPLATE")] == "v1.2.0"

    # The fleet view: every project on this template that is not on v2.0.0.
    old = kubectl(
        "get", "gp", "-n", namespace, "-o", "name",
        "--field-selector", f"status.template.url={tpl.url},status.template.tag!=v2.0.0",
    ).stdout.split()  # fmt: skip
    assert sorted(old) == [f"generatedproject.projectgen.io/{n}" for n in ("branch", "follows", "pinned")]
