"""Following a template (issue 24): version constraints on template refs, recorded resolutions,
the fleet view, and the update check, on the real control plane and the project's git server."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from support import (
    PROJECTS,
    OperatorProcess,
    condition,
    create,
    get,
    project_body,
    wait_event,
    wait_for,
    wait_phase,
)
from test_generatedproject import GIT_ENV

from projectgen.generation.follow import parse_duration, slot_start
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
    tpl = released(git_server, f"svc-{namespace}", "v1.0.0", "v1.2.0", "v2.0.0")
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


# -- the update check (a solo operator with a one-second floor, so intervals of seconds) ---------

INTERVAL = "2s"
LISTING = "GET /templates/"  # every git session starts with GET <repo>/info/refs


@pytest.fixture
def follower(
    control_plane: Any, solo_namespace: str, tmp_path: Path
) -> Iterator[tuple[str, OperatorProcess]]:
    proc = OperatorProcess(
        control_plane.kubeconfig,
        tmp_path / "data",
        tmp_path / "operator.log",
        namespaces=(solo_namespace,),
        env={"PROJECTGEN_TEMPLATE_MIN_INTERVAL": "1s"},
    )
    with proc:
        yield solo_namespace, proc
    print(f"operator log: {tmp_path / 'operator.log'}")


def released(server: GitHTTPServer, name: str, *tags: str) -> Template:
    tpl = Template(server, name)
    for path, content in FILES.items():
        (tpl.work / path).write_text(content)
    for tag in tags:
        tpl.release(tag)
    return tpl


def listings_after(
    server: GitHTTPServer, repo: str, since: float, count: int, timeout: float = 60
) -> list[float]:
    """Wait until `count` sessions on `repo` were answered since `since` (the check's listings
    once every render is done); return their times."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = server.requests_since(since, f"GET /{repo}.git/info/refs")
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(
        f"only {len(server.requests_since(since, repo))} listings of {repo} after {timeout}s"
    )


def on_tag(api: client.ApiClient, namespace: str, name: str, tag: str) -> dict[str, Any]:
    """The project once it is Completed on `tag`."""
    return wait_for(
        api, PROJECTS, namespace, name,
        lambda o: (o.get("status") or {}).get("template", {}).get("tag") == tag
        and o["status"].get("phase") == "Completed",
        timeout=60, what=f"Completed on {tag}",
    )  # fmt: skip


def test_a_new_tag_moves_the_projects_whose_constraint_accepts_it_and_no_other(
    api_client: client.ApiClient, follower: tuple[str, OperatorProcess], git_server: GitHTTPServer
) -> None:
    namespace, _ = follower
    tpl = released(git_server, f"moves-{namespace}", "v1.0.0")
    refs = {"follows": ">=1,<2", "exact": "==1.0.0", "below": "<1.1"}
    for name, ref in refs.items():
        source = template_source(tpl.url, ref, updateInterval=INTERVAL)
        create(api_client, PROJECTS, namespace, project_body(name, [source]))
    before = {name: completed(api_client, namespace, name)["status"] for name in refs}
    assert {s["template"]["tag"] for s in before.values()} == {"v1.0.0"}

    tpl.release("v1.1.0")
    since = time.time()
    moved = on_tag(api_client, namespace, "follows", "v1.1.0")
    assert (Path(moved["status"]["outputDirectory"]) / "tree" / "VERSION").read_text() == "1.1.0\n"
    assert moved["status"]["contentHash"] != before["follows"]["contentHash"]
    wait_event(
        api_client, namespace, "follows",
        lambda e: e.reason == "TemplateMoved" and e.message == f"template {tpl.url} moved from v1.0.0 to v1.1.0",
    )  # fmt: skip
    # Two more listings: every project has since had a whole slot to see v1.1.0.
    listings_after(git_server, tpl.name, since, 3)
    for name in ("exact", "below"):
        status = get(api_client, PROJECTS, namespace, name)["status"]  # type: ignore[index]
        assert status["template"]["tag"] == "v1.0.0" and status["contentHash"] == before[name]["contentHash"]
        assert status["phase"] == "Completed"


def test_projects_on_one_template_share_one_listing_per_interval(
    api_client: client.ApiClient, follower: tuple[str, OperatorProcess], git_server: GitHTTPServer
) -> None:
    namespace, _ = follower
    count = int(os.environ.get("PROJECTGEN_FLEET_TEST_N", "200"))
    tpl = released(git_server, f"fleet-{namespace}", "v1.0.0")
    for i in range(count):
        source = template_source(tpl.url, ">=1,<2", updateInterval=INTERVAL)
        create(api_client, PROJECTS, namespace, project_body(f"p{i}", [source]))
    for i in range(count):
        completed(api_client, namespace, f"p{i}", timeout=600)
    since = time.time()
    found = listings_after(git_server, tpl.name, since, 4)
    every = parse_duration(INTERVAL)
    slots = {slot_start(t, every, tpl.url) for t in found}
    assert len(found) == len(slots), f"{len(found)} listings in {len(slots)} slots of {INTERVAL}"


def follow_one(api: client.ApiClient, namespace: str, url: str, ref: str) -> dict[str, Any]:
    """Project "p" following `url` at `ref`, once Completed: its status."""
    create(api, PROJECTS, namespace, project_body("p", [template_source(url, ref, updateInterval=INTERVAL)]))
    return completed(api, namespace, "p")["status"]


def checked(api: client.ApiClient, namespace: str, state: str) -> dict[str, Any]:
    """Project "p" once its TemplateChecked condition is `state`."""
    return wait_for(
        api, PROJECTS, namespace, "p",
        lambda o: condition(o, "TemplateChecked").get("status") == state,
        timeout=60, what=f"with TemplateChecked={state}",
    )  # fmt: skip


def test_a_host_that_is_down_leaves_completed_projects_completed_with_a_condition(
    api_client: client.ApiClient, follower: tuple[str, OperatorProcess], git_server: GitHTTPServer
) -> None:
    namespace, _ = follower
    tpl = released(git_server, f"down-{namespace}", "v1.0.0")
    before = follow_one(api_client, namespace, tpl.url, "~=1.0")
    git_server.fail_next(503, match=f"/{tpl.name}.git", times=10_000)
    try:
        down = checked(api_client, namespace, "False")
    finally:
        git_server.clear_faults()
    message = condition(down, "TemplateChecked")["message"]
    assert "unreachable" in message and tpl.url in message, message
    assert down["status"]["phase"] == "Completed" and condition(down, "Ready")["status"] == "True"
    assert down["status"]["contentHash"] == before["contentHash"]
    assert down["status"]["outputDirectory"] == before["outputDirectory"]
    wait_event(api_client, namespace, "p", lambda e: e.reason == "TemplateCheckFailed")
    # The host is back: the next check clears it, and nothing was rendered meanwhile.
    back = checked(api_client, namespace, "True")
    assert back["status"]["contentHash"] == before["contentHash"] and back["status"]["phase"] == "Completed"


def test_a_deleted_tag_is_reported_and_the_project_keeps_what_it_rendered(
    api_client: client.ApiClient, follower: tuple[str, OperatorProcess], git_server: GitHTTPServer
) -> None:
    namespace, _ = follower
    tpl = released(git_server, f"deleted-{namespace}", "v1.0.0", "v1.1.0")
    before = follow_one(api_client, namespace, tpl.url, ">=1,<2")
    assert before["template"]["tag"] == "v1.1.0"
    tpl.delete_tag("v1.1.0")
    reported = checked(api_client, namespace, "False")
    message = condition(reported, "TemplateChecked")["message"]
    assert "tag v1.1.0" in message and "was deleted" in message, message
    status = reported["status"]
    assert status["template"]["tag"] == "v1.1.0" and status["contentHash"] == before["contentHash"]
    assert status["phase"] == "Completed"


@pytest.mark.usefixtures("operator")
def test_the_api_server_accepts_constraints_and_refuses_a_duration_kubernetes_would_not_write(
    namespace: str, kubectl: Callable[..., Any]
) -> None:
    def apply(ref: str, every: str) -> Any:
        doc = project_body("v", [template_source("https://git.example/t.git", ref, updateInterval=every)])
        doc["apiVersion"] = "projectgen.io/v1alpha1"
        return kubectl(
            "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(doc), check=False
        )

    for ref in (">=1.2,<2", "~=1.2", "==1.*", ">=1.2, <2", "v1.2.0", "main"):
        done = apply(ref, "1h30m")
        assert done.returncode == 0, done.stderr
    refused = apply(">=1", "1d")
    assert refused.returncode != 0 and "spec.sources[0].template.updateInterval" in refused.stderr
    refused = apply(">=1;rm", "1h")
    assert refused.returncode != 0 and "spec.sources[0].template.ref" in refused.stderr


def test_a_moved_template_that_does_not_render_leaves_the_project_as_it_was(
    api_client: client.ApiClient, follower: tuple[str, OperatorProcess], git_server: GitHTTPServer
) -> None:
    namespace, _ = follower
    tpl = released(git_server, f"broken-{namespace}", "v1.0.0")
    before = follow_one(api_client, namespace, tpl.url, ">=1,<2")
    tpl.release("v1.1.0", {"copier.yml": "name: [unclosed\n"})
    kept = wait_for(
        api_client, PROJECTS, namespace, "p",
        lambda o: condition(o, "TemplateChecked").get("reason") == "RenderFailed"
        and o["status"].get("phase") == "Completed",
        timeout=60, what="keeping v1.0.0",
    )  # fmt: skip
    assert (
        condition(kept, "Ready")["status"] == "True"
        and condition(kept, "TemplateChecked")["status"] == "False"
    )
    assert "did not render" in condition(kept, "TemplateChecked")["message"]
    status = kept["status"]
    assert status["template"]["tag"] == "v1.0.0" and status["contentHash"] == before["contentHash"]
    assert (Path(status["outputDirectory"]) / "tree" / "VERSION").read_text() == "1.0.0\n"
    wait_event(api_client, namespace, "p", lambda e: e.reason == "TemplateRenderFailed")

    tpl.release("v1.2.0", {"copier.yml": FILES["copier.yml"]})
    fixed = on_tag(api_client, namespace, "p", "v1.2.0")
    assert condition(fixed, "TemplateChecked") == {}
