"""GeneratedProject end to end: the operator (a real subprocess) against a real kube-apiserver."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from support import (
    CREATED_BY_KINDS,
    PROJECTS,
    OperatorProcess,
    condition,
    create,
    create_annotated,
    custom,
    get,
    inline_source,
    project_body,
    wait_event,
    wait_for,
    wait_phase,
)

from projectgen_dev.gitserver import GitHTTPServer

GROUP, VERSION = "projectgen.io", "v1alpha1"
GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHTTPServer]:
    with GitHTTPServer(tmp_path_factory.mktemp("git-srv")) as server:
        yield server


def publish_template(
    server: GitHTTPServer,
    name: str,
    files: dict[bytes, bytes],
    tag: str = "v1",
    symlinks: dict[str, str] | None = None,
) -> str:
    """A copier template as a real git repository served over smart HTTP; returns its URL."""
    work = server.root.parent / f"work-{name}"
    os.makedirs(work)
    for path, content in files.items():
        full = os.path.join(os.fsencode(work), path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as fh:
            fh.write(content)
    for link, target in (symlinks or {}).items():
        os.makedirs(os.path.dirname(work / link), exist_ok=True)
        os.symlink(target, work / link)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "template"], ["tag", tag]):
        subprocess.run(["git", *args], cwd=work, env=GIT_ENV, check=True, capture_output=True)
    bare = server.repo_path(f"templates/{name}")
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], env=GIT_ENV, check=True)
    return server.url(f"templates/{name}")


def configmap(
    api: client.ApiClient,
    namespace: str,
    name: str,
    data: dict[str, str],
    binary: dict[str, bytes] | None = None,
) -> None:
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name),
        data=data,
        binary_data={k: base64.b64encode(v).decode() for k, v in (binary or {}).items()} or None,
    )
    client.CoreV1Api(api).create_namespaced_config_map(namespace, body)


def manifest_of(status: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(status["outputDirectory"]) / "manifest.json").read_text())
    return data


def tree_files(status: dict[str, Any]) -> dict[str, bytes]:
    root = Path(status["outputDirectory"]) / "tree"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def completed(api: client.ApiClient, namespace: str, name: str, timeout: float = 60) -> dict[str, Any]:
    obj = wait_phase(api, PROJECTS, namespace, name, "Completed", "Failed", timeout=timeout)
    assert obj["status"]["phase"] == "Completed", obj["status"].get("errorMessage")
    return obj


def failed(api: client.ApiClient, namespace: str, name: str, timeout: float = 60) -> dict[str, Any]:
    obj = wait_phase(api, PROJECTS, namespace, name, "Completed", "Failed", timeout=timeout)
    assert obj["status"]["phase"] == "Failed", obj["status"]
    return obj


def test_inline_files_are_rendered_and_reported(
    api_client: client.ApiClient, namespace: str, kubectl: Callable[..., Any]
) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    source = inline_source(
        {"README.md": "# Hello\n", "bin/run": "#!/bin/sh\necho hi\n"}, executable=("bin/run",)
    )
    source["inline"]["files"].append(
        {"path": "docs/logo.png", "contentBase64": base64.b64encode(png).decode()}
    )
    create(api_client, PROJECTS, namespace, project_body("hello", [source], project="billing"))
    obj = completed(api_client, namespace, "hello")
    status = obj["status"]
    assert status["totalFiles"] == 3
    assert status["totalSize"] == len(b"# Hello\n") + len(b"#!/bin/sh\necho hi\n") + len(png)
    assert status["filesTruncated"] is False
    records = {f["path"]: f for f in status["files"]}
    assert records["docs/logo.png"]["sha256"] == hashlib.sha256(png).hexdigest()
    assert records["docs/logo.png"]["type"] == "png"
    assert records["README.md"]["type"] == "markdown" and records["README.md"]["name"] == "README.md"
    assert tree_files(status)["docs/logo.png"] == png
    assert os.access(Path(status["outputDirectory"]) / "tree" / "bin" / "run", os.X_OK)
    manifest = manifest_of(status)
    assert manifest["contentHash"] == status["contentHash"]
    previews = {f["path"]: f["preview"] for f in manifest["files"]}
    assert previews["README.md"] == "# Hello\n" and previews["docs/logo.png"] is None
    assert "preview" not in records["README.md"]  # previews stay in manifest.json
    ready, reconciling, stalled = (condition(obj, t) for t in ("Ready", "Reconciling", "Stalled"))
    assert (ready["status"], reconciling["status"], stalled["status"]) == ("True", "False", "False")
    assert all(
        c["observedGeneration"] == obj["metadata"]["generation"] for c in (ready, reconciling, stalled)
    )
    assert status["completedAt"]
    assert status["createdBy"] == "projectgen-admin"  # stamped by the admission policy
    wait_event(api_client, namespace, "hello", lambda e: e.reason == "Generating")
    wait_event(api_client, namespace, "hello", lambda e: e.reason == "Completed")
    out = kubectl("get", "generatedprojects", "-n", namespace).stdout.splitlines()
    assert out[1].split()[:6] == ["hello", "billing", "Completed", "True", "3", str(status["totalSize"])]


def test_configmap_sources_and_layering(api_client: client.ApiClient, namespace: str) -> None:
    configmap(
        api_client,
        namespace,
        "files",
        {"app.py": "print('cm')\n", "extra.txt": "extra\n"},
        {"blob.bin": b"\x00\x01\xff"},
    )
    configmap(api_client, namespace, "mapped", {"main": "main\n", "unused": "no\n"})
    sources = [
        inline_source({"app.py": "print('inline')\n", "keep.txt": "kept\n"}),
        {"configMap": {"name": "files"}},
        {"configMap": {"name": "mapped", "items": [{"key": "main", "path": "src/pkg/main.py"}]}},
        inline_source({"extra.txt": "last wins\n"}),
    ]
    create(api_client, PROJECTS, namespace, project_body("layers", sources))
    status = completed(api_client, namespace, "layers")["status"]
    assert tree_files(status) == {
        "app.py": b"print('cm')\n",
        "blob.bin": b"\x00\x01\xff",
        "extra.txt": b"last wins\n",
        "keep.txt": b"kept\n",
        "src/pkg/main.py": b"main\n",
    }


def test_missing_configmap_waits_then_completes(api_client: client.ApiClient, namespace: str) -> None:
    create(api_client, PROJECTS, namespace, project_body("late", [{"configMap": {"name": "later"}}]))
    obj = wait_phase(api_client, PROJECTS, namespace, "late", "Pending", timeout=30)
    assert "ConfigMap 'later' not found" in condition(obj, "Ready")["message"]
    assert (
        condition(obj, "Reconciling")["status"] == "True" and condition(obj, "Stalled")["status"] == "False"
    )
    configmap(api_client, namespace, "later", {"hello.txt": "at last\n"})
    status = completed(api_client, namespace, "late", timeout=60)["status"]
    assert tree_files(status) == {"hello.txt": b"at last\n"}


def test_template_from_git_with_answers(
    api_client: client.ApiClient, namespace: str, git_server: GitHTTPServer
) -> None:
    url = publish_template(
        git_server,
        f"svc-{namespace}",
        {
            b"copier.yml": b"project_name:\n  type: str\nlicense:\n  type: str\n  default: MIT\n",
            b"{{project_name}}/README.md.jinja": b"# {{ project_name }} ({{ license }})\n",
            b"{{project_name}}/setup.cfg": b"[metadata]\n",
        },
    )
    spec_source = {"template": {"url": url, "ref": "v1", "data": {"project_name": "billing"}}}
    create(
        api_client,
        PROJECTS,
        namespace,
        project_body("tpl", [spec_source, inline_source({"billing/NOTES": "n\n"})]),
    )
    files = tree_files(completed(api_client, namespace, "tpl")["status"])
    assert files["billing/README.md"] == b"# billing (MIT)\n"
    assert files["billing/setup.cfg"] == b"[metadata]\n" and files["billing/NOTES"] == b"n\n"


def test_template_from_configmap(api_client: client.ApiClient, namespace: str) -> None:
    configmap(api_client, namespace, "tpl", {"copier": "name:\n  type: str\n", "readme": "Hi {{ name }}\n"})
    source = {
        "template": {
            "configMap": {
                "name": "tpl",
                "items": [
                    {"key": "copier", "path": "copier.yml"},
                    {"key": "readme", "path": "README.md.jinja"},
                ],
            },
            "data": {"name": "ops"},
        }
    }
    create(api_client, PROJECTS, namespace, project_body("cmtpl", [source]))
    assert tree_files(completed(api_client, namespace, "cmtpl")["status"])["README.md"] == b"Hi ops\n"


@pytest.mark.parametrize(
    ("case", "copier_yml", "tasks", "phase", "expected"),
    [
        ("tasks", "_tasks:\n  - touch /tmp/pwned\n", "Skip", "Completed", "_tasks were skipped"),
        ("tasks-fail", "_tasks:\n  - touch /tmp/pwned\n", "Fail", "Failed", "and tasks is Fail"),
        # run in the sandbox: the task may write only the project
        (
            "tasks-run",
            "_tasks:\n  - touch /tmp/pwned\n",
            "Run",
            "Failed",
            "task 'touch /tmp/pwned' exited with code 1",
        ),
        ("migrations", "_migrations:\n  - version: v2\n    command: rm -rf /\n", "Skip", "Completed", None),
        ("extensions", "_jinja_extensions:\n  - jinja2_time.TimeExtension\n", "Skip", "Completed", None),
    ],
)
def test_code_running_features(
    api_client: client.ApiClient,
    namespace: str,
    case: str,
    copier_yml: str,
    tasks: str,
    phase: str,
    expected: str | None,
) -> None:
    """What copier runs as code: extensions load in the sandbox, migrations do not apply to a copy,
    tasks run only in the sandbox with `tasks: Run` (else skipped with a Warning, or the source fails)."""
    configmap(api_client, namespace, "tpl", {"copier": copier_yml, "f": "x\n"})
    items = [{"key": "copier", "path": "copier.yml"}, {"key": "f", "path": "f.txt"}]
    source = {"template": {"configMap": {"name": "tpl", "items": items}, "tasks": tasks}}
    create(api_client, PROJECTS, namespace, project_body("p", [source]))
    obj = wait_phase(api_client, PROJECTS, namespace, "p", "Completed", "Failed", timeout=60)
    assert obj["status"]["phase"] == phase, obj["status"]
    if expected is not None:
        wait_event(
            api_client, namespace, "p", lambda e: e.type == "Warning" and expected in (e.message or "")
        )
    assert not Path("/tmp/pwned").exists()


def test_kubectl_wait_ready(
    api_client: client.ApiClient, namespace: str, kubectl: Callable[..., Any]
) -> None:
    create(api_client, PROJECTS, namespace, project_body("w", [inline_source({"a.txt": "a"})]))
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "generatedproject/w", "--timeout=60s")


@pytest.mark.parametrize(
    ("case", "setup", "source", "expected"),
    [
        (
            "configmap-missing-item",
            {"a": "x"},
            {"configMap": {"name": "cm", "items": [{"key": "b", "path": "b"}]}},
            "key 'b' not found",
        ),
        (
            "template-name-traversal",
            {"copier": "evil:\n  type: str\n", "f": "x"},
            {
                "template": {
                    "configMap": {
                        "name": "cm",
                        "items": [
                            {"key": "copier", "path": "copier.yml"},
                            {"key": "f", "path": "{{ evil }}/x.txt"},
                        ],
                    },
                    "data": {"evil": ".."},
                }
            },
            "..",
        ),
    ],
)
def test_bad_paths_that_reach_the_operator_fail_naming_them(
    api_client: client.ApiClient,
    namespace: str,
    data_dir: Path,
    case: str,
    setup: dict[str, str],
    source: dict[str, Any],
    expected: str,
) -> None:
    configmap(api_client, namespace, "cm", setup)
    create(api_client, PROJECTS, namespace, project_body("bad", [source]))
    status = failed(api_client, namespace, "bad")["status"]
    assert expected in status["errorMessage"]
    assert not (data_dir / "projects" / namespace / "x.txt").exists()
    assert not list((data_dir / "projects" / namespace).glob("**/x.txt"))


def test_non_utf8_file_names_are_refused(
    api_client: client.ApiClient, namespace: str, git_server: GitHTTPServer
) -> None:
    url = publish_template(git_server, f"latin1-{namespace}", {b"copier.yml": b"{}\n", b"caf\xe9.txt": b"x"})
    create(api_client, PROJECTS, namespace, project_body("latin", [{"template": {"url": url}}]))
    assert "not valid UTF-8" in failed(api_client, namespace, "latin")["status"]["errorMessage"]


def test_empty_project(api_client: client.ApiClient, namespace: str) -> None:
    configmap(api_client, namespace, "empty", {})
    create(api_client, PROJECTS, namespace, project_body("empty", [{"configMap": {"name": "empty"}}]))
    status = completed(api_client, namespace, "empty")["status"]
    assert status["totalFiles"] == 0 and status["totalSize"] == 0
    assert status["contentHash"] == hashlib.sha256(b"").hexdigest()


def test_twenty_thousand_files_status_stays_capped(
    api_client: client.ApiClient, namespace: str, kubectl: Callable[..., Any]
) -> None:
    data = {f"f{i:05d}.txt": str(i) for i in range(20_000)}
    configmap(api_client, namespace, "many", data)
    create(api_client, PROJECTS, namespace, project_body("many", [{"configMap": {"name": "many"}}]))
    obj = completed(api_client, namespace, "many", timeout=120)
    status = obj["status"]
    assert status["totalFiles"] == 20_000
    assert len(status["files"]) == 1000 and status["filesTruncated"] is True
    assert status["files"][0]["path"] == "f00000.txt"
    assert len(manifest_of(status)["files"]) == 20_000
    assert len(json.dumps(obj)) < 400_000  # far below the API server's object limit


def test_spec_change_regenerates_and_swaps(api_client: client.ApiClient, namespace: str) -> None:
    create(api_client, PROJECTS, namespace, project_body("swap", [inline_source({"v.txt": "1"})]))
    first = completed(api_client, namespace, "swap")["status"]
    patch = {"spec": {"sources": [inline_source({"v.txt": "2"})]}}
    custom(api_client).patch_namespaced_custom_object(GROUP, VERSION, namespace, PROJECTS, "swap", patch)
    obj = wait_for(
        api_client,
        PROJECTS,
        namespace,
        "swap",
        lambda o: (
            (o.get("status") or {}).get("observedGeneration") == 2 and o["status"]["phase"] == "Completed"
        ),
    )
    second = obj["status"]
    assert second["contentHash"] != first["contentHash"]
    assert tree_files(second) == {"v.txt": b"2"}
    assert not Path(first["outputDirectory"]).exists()


def test_archive_and_unarchive(
    api_client: client.ApiClient, namespace: str, kubectl: Callable[..., Any]
) -> None:
    create(api_client, PROJECTS, namespace, project_body("arc", [inline_source({"a.txt": "a"})]))
    first = completed(api_client, namespace, "arc")["status"]
    api = custom(api_client)
    api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PROJECTS, "arc", {"spec": {"archived": True}}
    )
    obj = wait_phase(api_client, PROJECTS, namespace, "arc", "Archived")
    assert not Path(first["outputDirectory"]).exists()
    assert obj["status"]["contentHash"] == first["contentHash"]  # the record stays
    assert "outputDirectory" not in obj["status"]
    wait_event(api_client, namespace, "arc", lambda e: e.reason == "Archived")
    api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PROJECTS, "arc", {"spec": {"archived": False}}
    )
    status = wait_phase(api_client, PROJECTS, namespace, "arc", "Completed")["status"]
    assert tree_files(status) == {"a.txt": b"a"}


def test_deletion_removes_the_directory(api_client: client.ApiClient, namespace: str, data_dir: Path) -> None:
    obj = create(api_client, PROJECTS, namespace, project_body("gone", [inline_source({"a.txt": "a"})]))
    status = completed(api_client, namespace, "gone")["status"]
    assert Path(status["outputDirectory"]).is_dir()
    assert obj["metadata"]["uid"] in status["outputDirectory"]
    custom(api_client).delete_namespaced_custom_object(GROUP, VERSION, namespace, PROJECTS, "gone")
    deadline = time.monotonic() + 30
    while get(api_client, PROJECTS, namespace, "gone") is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert get(api_client, PROJECTS, namespace, "gone") is None
    assert not (data_dir / "projects" / namespace / "gone").exists()


BIG_TEMPLATE = (
    "{% for i in range(n) %}{% for j in range(1000) %}"
    "line {{ i }}.{{ j }} of a large generated file, padded to look like code\n{% endfor %}{% endfor %}"
)


def test_restart_mid_generation_completes_without_debris(
    api_client: client.ApiClient, solo_namespace: str, control_plane: Any, tmp_path: Path
) -> None:
    namespace = solo_namespace
    data = tmp_path / "data"
    log = tmp_path / "operator.log"
    configmap(api_client, namespace, "big", {"copier": "n:\n  type: int\n", "big": BIG_TEMPLATE})
    items = [{"key": "copier", "path": "copier.yml"}, {"key": "big", "path": "big.txt.jinja"}]
    body = project_body(
        "big", [{"template": {"configMap": {"name": "big", "items": items}, "data": {"n": 1500}}}]
    )
    first = OperatorProcess(control_plane.kubeconfig, data, log, namespaces=(namespace,)).start()
    try:
        create(api_client, PROJECTS, namespace, body)
        wait_phase(api_client, PROJECTS, namespace, "big", "Generating", timeout=30)
        staging = data / ".staging"
        deadline = time.monotonic() + 60
        while not (staging.is_dir() and list(staging.iterdir())):
            assert time.monotonic() < deadline, "the render never started in staging"
            time.sleep(0.05)
        # Frozen, the operator is where the kill will find it: at work in staging, not done.
        assert first.proc is not None
        first.proc.send_signal(signal.SIGSTOP)
        assert list(staging.iterdir()), "the kill should land mid-generation"
        assert get(api_client, PROJECTS, namespace, "big")["status"]["phase"] == "Generating"  # type: ignore[index]
    finally:
        first.kill()
    with OperatorProcess(control_plane.kubeconfig, data, log, namespaces=(namespace,)):
        status = completed(api_client, namespace, "big", timeout=180)["status"]
        expected = "".join(
            f"line {i}.{j} of a large generated file, padded to look like code\n"
            for i in range(1500)
            for j in range(1000)
        )
        digest = hashlib.sha256(expected.encode()).hexdigest()
        assert [f["sha256"] for f in status["files"] if f["path"] == "big.txt"] == [digest]
        with open(Path(status["outputDirectory"]) / "tree" / "big.txt", "rb") as fh:
            assert hashlib.file_digest(fh, "sha256").hexdigest() == digest
        assert list((data / ".staging").iterdir()) == []
        outputs = list((data / "projects" / namespace / "big").glob("*/*"))
        assert outputs == [Path(status["outputDirectory"])]


@pytest.mark.matrix
@pytest.mark.created_by_policy
@pytest.mark.parametrize("plural", CREATED_BY_KINDS)
def test_created_by_cannot_be_forged_or_changed(
    api_client: client.ApiClient, namespace: str, kubectl: Callable[..., Any], plural: str
) -> None:
    made = create_annotated(api_client, plural, namespace, "forged", {"projectgen.io/created-by": "mallory"})
    assert made["metadata"]["annotations"] == {"projectgen.io/created-by": "projectgen-admin"}  # the policy's
    done = wait_phase(api_client, plural, namespace, "forged", "Completed")
    assert done["status"]["createdBy"] == "projectgen-admin"
    result = kubectl(
        "annotate",
        "-n",
        namespace,
        "--overwrite",
        f"{plural}/forged",
        "projectgen.io/created-by=eve",
        check=False,
    )
    assert result.returncode != 0 and "cannot be changed" in result.stderr
