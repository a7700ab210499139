"""Namespaces are walls: a resource of namespace A never makes the operator read B's ConfigMaps,
Secrets or projects, never writes under B's directory, and a recreated resource never sees the
files of the one deleted before it.

One operator serves two fresh namespaces A and B with its own data directory. B holds objects
with the names A's resources ask for, each with content that must never show up in A's output.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException
from relsupport import Stats, debris, tree_problems, wait_until
from support import (
    EXPORTS,
    GROUP,
    PROJECTS,
    VERSION,
    create,
    custom,
    get,
    inline_source,
    project_body,
    wait_phase,
)

from projectgen_dev.fakehosts import FakeGitHub

B_MARKER = "B-ONLY-3c1f0a"
TOKEN_B = "ghp_NamespaceBToken0123456789abcdefgh"


def _configmap(api: kubernetes.client.ApiClient, ns: str, name: str, data: dict[str, str]) -> None:
    body = kubernetes.client.V1ConfigMap(metadata=kubernetes.client.V1ObjectMeta(name=name), data=data)
    kubernetes.client.CoreV1Api(api).create_namespaced_config_map(ns, body)


def _tree(status: dict[str, Any]) -> dict[str, bytes]:
    root = Path(status["outputDirectory"]) / "tree"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink())


def _rejected(api: kubernetes.client.ApiClient, plural: str, ns: str, body: dict[str, Any]) -> str:
    try:
        custom(api).create_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            plural,
            {"apiVersion": f"{GROUP}/{VERSION}", **body},
            field_validation="Strict",
        )
    except ApiException as exc:
        return str(exc.body)
    pytest.fail(f"the API server accepted {body['metadata']['name']} in {ns}")


def _gone(api: kubernetes.client.ApiClient, plural: str, ns: str, name: str) -> None:
    wait_until(
        f"{plural}/{name} deleted", lambda: None if get(api, plural, ns, name) is None else "still there", 30
    )


def test_a_resource_reaches_nothing_of_another_namespace(
    api_client: kubernetes.client.ApiClient,
    make_solo_namespace: Any,
    operators: Any,
    stats: Stats,
    tmp_path: Path,
) -> None:
    a, b = make_solo_namespace("a"), make_solo_namespace("b")
    data = tmp_path / "data"
    operators.new((a, b), data, name="isolation").start()
    core = kubernetes.client.CoreV1Api(api_client)
    checks = 0

    # B: objects with the names A will ask for.
    _configmap(api_client, b, "shared", {"secret.txt": f"{B_MARKER} configmap\n"})
    _configmap(api_client, b, "tpl", {"copier": "{}\n", "f": f"{B_MARKER} template\n"})
    core.create_namespaced_secret(
        b,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name="git-token"), string_data={"token": TOKEN_B}
        ),
    )
    create(
        api_client, PROJECTS, b, project_body("same", [inline_source({"who.txt": f"{B_MARKER} project\n"})])
    )
    create(api_client, PROJECTS, b, project_body("only-b", [inline_source({"x.txt": B_MARKER})]))

    # A: a project of the same name, and references to what only B has.
    create(api_client, PROJECTS, a, project_body("same", [inline_source({"who.txt": "A\n"})]))
    create(api_client, PROJECTS, a, project_body("wants-cm", [{"configMap": {"name": "shared"}}]))
    items = [{"key": "copier", "path": "copier.yml"}, {"key": "f", "path": "f.txt"}]
    create(
        api_client,
        PROJECTS,
        a,
        project_body("wants-tpl", [{"template": {"configMap": {"name": "tpl", "items": items}}}]),
    )
    create(
        api_client,
        EXPORTS,
        a,
        {
            "kind": "RepositoryExport",
            "metadata": {"name": "wants-project"},
            "spec": {"generatedProjectRef": {"name": "only-b"}, "exportType": "zip"},
        },
    )

    # Names that try to carry a namespace: refused by the schema.
    for i, ref in enumerate(
        [f"{b}/shared", f"../{b}", f"{b}:shared", f"/api/v1/namespaces/{b}/configmaps/shared"]
    ):
        message = _rejected(api_client, PROJECTS, a, project_body(f"bad-{i}", [{"configMap": {"name": ref}}]))
        assert "configMap.name" in message, message
        checks += 1
    message = _rejected(
        api_client,
        EXPORTS,
        a,
        {
            "kind": "RepositoryExport",
            "metadata": {"name": "bad-ref"},
            "spec": {"generatedProjectRef": {"name": f"{b}/same"}, "exportType": "zip"},
        },
    )
    assert "generatedProjectRef.name" in message, message
    for i, ref in enumerate([f"{b}/git-token", f"../{b}/git-token"]):
        config = {"apiUrl": "https://github.example.com/api/v3", "credentialsSecretRef": {"name": ref}}
        spec = {
            "generatedProjectRef": {"name": "same"},
            "exportType": "github",
            "repositoryName": "x",
            "config": config,
        }
        message = _rejected(
            api_client,
            EXPORTS,
            a,
            {"kind": "RepositoryExport", "metadata": {"name": f"bad-secret-{i}"}, "spec": spec},
        )
        assert "credentialsSecretRef.name" in message, message
        checks += 1
    message = _rejected(
        api_client,
        PROJECTS,
        a,
        project_body("bad-ns", [{"configMap": {"name": "shared", "namespace": b}}]),
    )
    assert "unknown field" in message, message
    checks += 2

    # A dotted name is a name, looked up in A only.
    create(api_client, PROJECTS, a, project_body("dotted", [{"configMap": {"name": f"shared.{b}"}}]))
    for name, what in (
        ("wants-cm", "ConfigMap 'shared' not found in this namespace"),
        ("wants-tpl", "ConfigMap 'tpl' not found"),
        ("dotted", f"ConfigMap 'shared.{b}' not found"),
    ):
        obj = wait_phase(api_client, PROJECTS, a, name, "Pending", timeout=60)
        assert what in obj["status"]["conditions"][0]["message"], obj["status"]
        checks += 1
    obj = wait_phase(api_client, EXPORTS, a, "wants-project", "Pending", timeout=60)
    assert "waiting for GeneratedProject 'only-b' to be created" in obj["status"]["conditions"][0]["message"]
    checks += 1

    # A Secret that only B has: never read, the host never called.
    with FakeGitHub(tokens={TOKEN_B}, root=tmp_path / "github") as github:
        spec = {
            "generatedProjectRef": {"name": "same"},
            "exportType": "github",
            "repositoryName": "same",
            "config": {"apiUrl": github.api_url, "credentialsSecretRef": {"name": "git-token"}},
        }
        create(
            api_client,
            EXPORTS,
            a,
            {"kind": "RepositoryExport", "metadata": {"name": "wants-secret"}, "spec": spec},
        )
        obj = wait_phase(api_client, EXPORTS, a, "wants-secret", "Failed", timeout=60)
        assert f"Secret 'git-token' not found in namespace '{a}'" in obj["status"]["errorMessage"]
        time.sleep(1)
        assert github.calls == [] and github.created == []
        checks += 1

    # Same names in both namespaces: separate directories, separate content.
    same_a = wait_phase(api_client, PROJECTS, a, "same", "Completed", timeout=60)["status"]
    same_b = wait_phase(api_client, PROJECTS, b, "same", "Completed", timeout=60)["status"]
    assert _tree(same_a) == {"who.txt": b"A\n"} and _tree(same_b) == {
        "who.txt": f"{B_MARKER} project\n".encode()
    }
    assert Path(same_a["outputDirectory"]).is_relative_to(data / "projects" / a / "same")
    assert Path(same_b["outputDirectory"]).is_relative_to(data / "projects" / b / "same")
    for ns in (a, b):
        create(
            api_client,
            EXPORTS,
            ns,
            {
                "kind": "RepositoryExport",
                "metadata": {"name": "same-zip"},
                "spec": {"generatedProjectRef": {"name": "same"}, "exportType": "zip"},
            },
        )
    zips = {
        ns: wait_phase(api_client, EXPORTS, ns, "same-zip", "Completed", timeout=60)["status"]["archivePath"]
        for ns in (a, b)
    }
    assert zipfile.ZipFile(zips[a]).read("same/who.txt") == b"A\n"
    assert Path(zips[a]).is_relative_to(data / "exports" / a) and Path(zips[b]).is_relative_to(
        data / "exports" / b
    )
    checks += 4

    # Once A has its own ConfigMap and template, A's data is used: B's never.
    _configmap(api_client, a, "shared", {"secret.txt": "A configmap\n"})
    _configmap(api_client, a, "tpl", {"copier": "{}\n", "f": "A template\n"})
    assert _tree(wait_phase(api_client, PROJECTS, a, "wants-cm", "Completed", timeout=90)["status"]) == {
        "secret.txt": b"A configmap\n"
    }
    assert _tree(wait_phase(api_client, PROJECTS, a, "wants-tpl", "Completed", timeout=90)["status"]) == {
        "f.txt": b"A template\n"
    }
    checks += 2

    # Recreated: same name, new uid, none of the old files.
    create(
        api_client,
        PROJECTS,
        a,
        project_body("re", [inline_source({"v1.txt": "one\n", "shared.txt": "v1\n"})]),
    )
    first = wait_phase(api_client, PROJECTS, a, "re", "Completed", timeout=60)
    create(
        api_client,
        EXPORTS,
        a,
        {
            "kind": "RepositoryExport",
            "metadata": {"name": "re-zip"},
            "spec": {"generatedProjectRef": {"name": "re"}, "exportType": "zip"},
        },
    )
    first_zip = wait_phase(api_client, EXPORTS, a, "re-zip", "Completed", timeout=60)["status"]["archivePath"]
    for plural, name in ((EXPORTS, "re-zip"), (PROJECTS, "re")):
        custom(api_client).delete_namespaced_custom_object(GROUP, VERSION, a, plural, name)
        _gone(api_client, plural, a, name)
    assert not Path(first["status"]["outputDirectory"]).exists() and not Path(first_zip).exists()
    second = create(
        api_client,
        PROJECTS,
        a,
        project_body("re", [inline_source({"v2.txt": "two\n", "shared.txt": "v2\n"})]),
    )
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    status = wait_phase(api_client, PROJECTS, a, "re", "Completed", timeout=60)["status"]
    assert second["metadata"]["uid"] in status["outputDirectory"]
    assert _tree(status) == {"shared.txt": b"v2\n", "v2.txt": b"two\n"}
    assert [p.name for p in (data / "projects" / a / "re").iterdir()] == [second["metadata"]["uid"]]
    create(
        api_client,
        EXPORTS,
        a,
        {
            "kind": "RepositoryExport",
            "metadata": {"name": "re-zip"},
            "spec": {"generatedProjectRef": {"name": "re"}, "exportType": "zip"},
        },
    )
    second_zip = wait_phase(api_client, EXPORTS, a, "re-zip", "Completed", timeout=60)["status"][
        "archivePath"
    ]
    assert second_zip != first_zip and sorted(zipfile.ZipFile(second_zip).namelist()) == [
        "re/",
        "re/shared.txt",
        "re/v2.txt",
    ]
    checks += 4

    # Nothing of B anywhere in A's part of the volume; nothing of A's resources under B's.
    problems = []
    for top in ("projects", "exports"):
        if B_MARKER.encode() in _all_bytes(data / top / a):
            problems.append(f"B's data found under {top}/{a}")
        names_b = {p.name for p in (data / top / b).iterdir()} if (data / top / b).is_dir() else set()
        allowed_b = {"same", "only-b"} if top == "projects" else {"same-zip"}
        problems += [f"{top}/{b}/{n} belongs to no resource of B" for n in names_b - allowed_b]
    for obj in custom(api_client).list_namespaced_custom_object(GROUP, VERSION, a, PROJECTS)["items"]:
        status = obj.get("status") or {}
        if status.get("phase") == "Completed":
            problems += [f"{obj['metadata']['name']}: {p}" for p in tree_problems(status)]
            if not Path(status["outputDirectory"]).is_relative_to(
                data / "projects" / a / obj["metadata"]["name"]
            ):
                problems.append(f"{obj['metadata']['name']} lives at {status['outputDirectory']}")
    problems += debris(data)
    checks += 3
    stats.add("isolation", "checks", checks)
    stats.add("isolation", "violations", len(problems))
    assert not problems, problems
