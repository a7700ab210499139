"""cookiecutter templates on a running operator: from git and from a ConfigMap, the engine
recorded in status; bad templates fail their own resource with a message and an Event."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from support import PROJECTS, create, project_body, wait_event
from test_generatedproject import completed, configmap, failed, git_server, publish_template, tree_files

from projectgen_dev.gitserver import GitHTTPServer

__all__ = ["git_server"]

pytestmark = pytest.mark.usefixtures("operator")

SLUG = "{{cookiecutter.project_slug}}"
TEMPLATE = {
    "cookiecutter.json": json.dumps(
        {"project_name": "Demo", "project_slug": "{{ cookiecutter.project_name|lower }}"}
    ),
    f"{SLUG}/README.md": "# {{ cookiecutter.project_name }}\n",
    "hooks/pre_gen_project.py": "print('checking {{ cookiecutter.project_slug }}')\n",
    "hooks/post_gen_project.sh": "#!/bin/sh\necho '{{ cookiecutter.project_slug }}' > hooked.txt\n",
}


def encoded(files: dict[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in files.items()}


def test_cookiecutter_templates_from_git_and_configmap(
    api_client: client.ApiClient, namespace: str, git_server: GitHTTPServer
) -> None:
    url = publish_template(git_server, f"cc-{namespace}", encoded(TEMPLATE))
    source = {"template": {"url": url, "ref": "v1", "data": {"project_name": "Widget"}}}
    create(api_client, PROJECTS, namespace, project_body("from-git", [source]))
    items = [{"key": f"f{i}", "path": path} for i, path in enumerate(TEMPLATE)]
    configmap(api_client, namespace, "cc-template", {f"f{i}": c for i, c in enumerate(TEMPLATE.values())})
    from_cm = {"template": {"configMap": {"name": "cc-template", "items": items}, "engine": "cookiecutter"}}
    create(api_client, PROJECTS, namespace, project_body("from-configmap", [from_cm]))

    status = completed(api_client, namespace, "from-git")["status"]
    assert status["engines"] == [{"source": 0, "engine": "cookiecutter"}]
    assert status["template"]["url"] == url and status["template"]["tag"] == "v1"
    files = tree_files(status)
    assert sorted(files) == [".cruft.json", "README.md", "hooked.txt"]
    assert files["README.md"] == b"# Widget\n" and files["hooked.txt"] == b"widget\n"
    cruft = json.loads(files[".cruft.json"])
    assert cruft["template"] == url and cruft["commit"] == status["template"]["commit"]
    assert cruft["context"]["cookiecutter"]["project_slug"] == "widget"

    status = completed(api_client, namespace, "from-configmap")["status"]
    assert status["engines"] == [{"source": 0, "engine": "cookiecutter"}]
    assert "templates" not in status
    assert tree_files(status)["hooked.txt"] == b"demo\n"


@pytest.mark.parametrize(
    ("name", "extra", "expected"),
    [
        (
            "two-dirs",
            {"hooks/post_gen_project.py": "import os\nos.mkdir('../stray')\n"},
            "the cookiecutter template rendered 2 top-level entries ('demo', 'stray'); it must render "
            "exactly one directory",
        ),
        (
            "hook-fails",
            {"hooks/post_gen_project.sh": "#!/bin/sh\necho 'no licence file' >&2\nexit 2\n"},
            "hook post_gen_project.sh exited with code 2; last lines of its stderr: no licence file",
        ),
        (
            "both-engines",
            {"copier.yml": "name: {type: str, default: x}\n"},
            "the template has both copier.yml (copier) and cookiecutter.json (cookiecutter); set engine",
        ),
    ],
)
def test_bad_cookiecutter_templates_fail_with_a_message(
    api_client: client.ApiClient,
    namespace: str,
    git_server: GitHTTPServer,
    name: str,
    extra: dict[str, str],
    expected: str,
) -> None:
    files = {**TEMPLATE, **extra}
    url = publish_template(git_server, f"{name}-{namespace}", encoded(files))
    create(api_client, PROJECTS, namespace, project_body(name, [{"template": {"url": url}}]))
    status = failed(api_client, namespace, name)["status"]
    assert expected in status["errorMessage"]
    wait_event(api_client, namespace, name, lambda e: e.type == "Warning" and expected in e.message)
