"""The API server itself enforces the schema generated from the models."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from projectgen.api.v1alpha1 import RepositoryExportSpec

pytestmark = pytest.mark.matrix  # the CRDs install and their rules hold on every supported version

GROUP, VERSION = "projectgen.io", "v1alpha1"
SHA = "a" * 64


def project(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GeneratedProject",
        "metadata": {"name": "demo"},
        "spec": {
            "projectRef": {"name": "billing"},
            "workflowExecutionRef": {"name": "run-42"},
            "sources": [
                {"inline": {"files": [{"path": "README.md", "content": "# demo\n"}]}},
                {"configMap": {"name": "files", "items": [{"key": "main.py", "path": "src/main.py"}]}},
                {
                    "template": {
                        "url": "https://git.example.com/t.git",
                        "ref": "v1",
                        "data": {"name": "x", "n": 3},
                    }
                },
            ],
        },
    }
    body["spec"].update(spec)
    return body


def export(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RepositoryExport",
        "metadata": {"name": "demo-zip"},
        "spec": {"generatedProjectRef": {"name": "demo"}, "exportType": "zip", "repositoryName": "demo"},
    }
    body["spec"].update(spec)
    return body


def github_export(**config: Any) -> dict[str, Any]:
    cfg = {"owner": "acme", "credentialsSecretRef": {"name": "gh", "key": "token"}, "topics": ["python"]}
    cfg.update(config)
    return export(exportType="github", repositoryName="billing-api", config=cfg)


def inline(path: str) -> dict[str, Any]:
    return project(sources=[{"inline": {"files": [{"path": path, "content": "x"}]}}])


def test_valid_samples_are_accepted_and_printed(kubectl: Callable[..., Any], namespace: str) -> None:
    docs = [project(), export(), export(exportType="tar.gz", repositoryName=None), github_export()]
    docs[2]["metadata"]["name"] = "demo-tgz"
    docs[2]["spec"].pop("repositoryName")
    docs[3]["metadata"]["name"] = "demo-gh"
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
    stored = json.loads(kubectl("get", "-n", namespace, "rexp", "demo-gh", "-o", "json").stdout)
    assert stored["spec"]["config"]["visibility"] == "private"  # defaults come from the models
    assert stored["spec"]["config"]["ifExists"] == "Fail"
    out = kubectl("get", "-n", namespace, "generatedprojects").stdout.splitlines()
    assert out[0].split() == ["NAME", "PROJECT", "PHASE", "READY", "FILES", "SIZE", "AGE"]
    assert out[1].split()[:2] == ["demo", "billing"]
    out = kubectl("get", "-n", namespace, "rexp", "-o", "wide").stdout.splitlines()
    assert out[0].split() == [
        "NAME",
        "PROJECT",
        "TYPE",
        "PHASE",
        "READY",
        "AGE",
        "ARCHIVE",
        "REPOSITORY",
        "PR",
        "CREATOR",
        "MESSAGE",
    ]
    assert {line.split()[0]: line.split()[2] for line in out[1:]} == {
        "demo-zip": "zip",
        "demo-tgz": "tar.gz",
        "demo-gh": "github",
    }
    # Both kinds are in the `projectgen` category and have their short names.
    names = kubectl("get", "-n", namespace, "projectgen", "-o", "name").stdout.split()
    assert "generatedproject.projectgen.io/demo" in names and len(names) == 4
    assert kubectl("get", "-n", namespace, "gp", "demo", "-o", "name").stdout.strip()
    assert kubectl("get", "-n", namespace, "genproj", "demo", "-o", "name").stdout.strip()
    explain = kubectl("explain", "generatedproject.spec.sources").stdout
    assert "applied in order" in explain and "template" in explain


BAD_OBJECTS: list[tuple[str, dict[str, Any], str]] = [
    ("dotdot", inline("../x"), "spec.sources[0].inline.files[0].path"),
    ("dotdot-inside", inline("a/../../b"), "no traversal"),
    ("absolute", inline("/etc/passwd"), "relative path"),
    ("dot-segment", inline("./.."), "no traversal"),
    ("backslash", inline("a\\..\\b"), "separator"),
    ("empty-segment", inline("a//b"), "none empty"),
    ("nul", inline("a\u0000b"), "NUL"),
    ("newline", inline("line\nbreak.txt"), "control characters"),
    ("tab", inline("a\tb"), "control characters"),
    ("del", inline("a\x7fb"), "control characters"),
    ("escape", inline("\x1b[31mred"), "control characters"),
    ("drive-letter", inline("C:/Windows/win.ini"), "drive letter"),
    ("drive-relative", inline("c:x"), "drive letter"),
    (
        "bad-base64",
        project(sources=[{"inline": {"files": [{"path": "logo.png", "contentBase64": "iVBORw0KGgo..."}]}}]),
        "spec.sources[0].inline.files[0].contentBase64",
    ),
    ("long-path", inline("a" * 1025), "spec.sources[0].inline.files[0].path"),
    ("no-sources", project(sources=[]), "spec.sources"),
    (
        "two-kinds",
        project(sources=[{"inline": {"files": [{"path": "a", "content": ""}]}, "configMap": {"name": "c"}}]),
        "exactly one of inline, configMap and template",
    ),
    ("no-kind", project(sources=[{}]), "exactly one of inline, configMap and template"),
    (
        "both-contents",
        project(sources=[{"inline": {"files": [{"path": "a", "content": "", "contentBase64": "YQ=="}]}}]),
        "exactly one of content and contentBase64",
    ),
    (
        "configmap-item-traversal",
        project(sources=[{"configMap": {"name": "c", "items": [{"key": "k", "path": "../../etc/x"}]}}]),
        "items[0].path",
    ),
    ("template-file-url", project(sources=[{"template": {"url": "file:///etc"}}]), "https:// or http://"),
    (
        "template-two-origins",
        project(sources=[{"template": {"url": "https://h/t.git", "configMap": {"name": "c"}}}]),
        "exactly one of url and configMap",
    ),
    (
        "too-many-sources",
        project(sources=[{"inline": {"files": [{"path": "a", "content": ""}]}}] * 33),
        "spec.sources",
    ),
    ("bad-name", project(projectRef={"name": "Not_A_Name"}), "spec.projectRef.name"),
    (
        "bad-export-type",
        export(exportType="rar"),
        'supported values: "zip", "tar", "tar.gz", "github", "gitlab", "gitea"',
    ),
    ("github-without-config", export(exportType="github"), "config.credentialsSecretRef"),
    ("bad-visibility", github_export(visibility="secret"), "spec.config.visibility"),
    ("bad-api-url", github_export(apiUrl="ftp://ghe.example.com/api/v3"), "https:// or http://"),
    ("bad-if-exists", github_export(ifExists="Overwrite"), "spec.config.ifExists"),
    ("too-many-topics", github_export(topics=[f"t{i}" for i in range(21)]), "spec.config.topics"),
    ("path-traversal", github_export(path="services/../../etc"), "no traversal"),
    ("path-absolute", github_export(path="/srv/billing"), "must be a relative path"),
    ("path-control", github_export(path="services/bil\nling"), "must not contain control characters"),
    (
        "bad-reviewer",
        github_export(pullRequest={"reviewers": ["al ice"]}),
        "spec.config.pullRequest.reviewers",
    ),
    ("bad-repository-name", export(repositoryName="../evil"), "spec.repositoryName"),
    ("dot-repository-name", export(repositoryName=".."), "must not be '.' or '..'"),
    ("compression-level", export(compressionLevel=12), "spec.compressionLevel"),
]


@pytest.mark.parametrize(("case", "body", "expected"), BAD_OBJECTS, ids=[c[0] for c in BAD_OBJECTS])
def test_invalid_objects_are_rejected_naming_the_field(
    kubectl: Callable[..., Any], namespace: str, case: str, body: dict[str, Any], expected: str
) -> None:
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
    assert result.returncode != 0, f"{case} was accepted"
    assert expected in result.stderr, result.stderr


def _custom(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


BAD_STATUS: list[tuple[str, str, dict[str, Any], str]] = [
    ("negative-size", "generatedprojects", {"totalSize": -1}, "status.totalSize"),
    ("negative-files", "generatedprojects", {"totalFiles": -3}, "status.totalFiles"),
    ("bad-phase", "generatedprojects", {"phase": "Done"}, "status.phase"),
    ("bad-hash", "generatedprojects", {"contentHash": "ABC"}, "status.contentHash"),
    (
        "bad-file-sha",
        "generatedprojects",
        {"files": [{"path": "a", "name": "a", "type": "text", "size": 1, "sha256": "xyz"}]},
        "status.files[0].sha256",
    ),
    (
        "bad-condition",
        "generatedprojects",
        {"conditions": [{"type": "Ready", "status": "Maybe"}]},
        "status.conditions[0].status",
    ),
    ("size-without-path", "repositoryexports", {"archiveSize": 10}, "archiveSize needs archivePath"),
    (
        "bad-archive-sha",
        "repositoryexports",
        {"archivePath": "/x.zip", "archiveSize": 1, "archiveSha256": "0" * 63},
        "status.archiveSha256",
    ),
    ("bad-url", "repositoryexports", {"repositoryUrl": "javascript:alert(1)"}, "https:// or http://"),
]


@pytest.mark.parametrize(("case", "plural", "status", "expected"), BAD_STATUS, ids=[c[0] for c in BAD_STATUS])
def test_invalid_status_is_rejected(
    api_client: client.ApiClient,
    namespace: str,
    case: str,
    plural: str,
    status: dict[str, Any],
    expected: str,
) -> None:
    api = _custom(api_client)
    body = project() if plural == "generatedprojects" else export()
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
    name = body["metadata"]["name"]
    with pytest.raises(ApiException) as err:
        api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, plural, name, {"status": status})
    assert err.value.status == 422
    assert expected in err.value.body, err.value.body


def test_status_only_through_the_subresource(api_client: client.ApiClient, solo_namespace: str) -> None:
    # A namespace no operator serves: the session's operator would write this status too (a 409).
    namespace = solo_namespace
    api = _custom(api_client)
    created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, "generatedprojects", project())
    # Status in a create request is dropped; a new object reads back with observedGeneration 0 so
    # kstatus (Flux, kubectl wait) sees it in progress before the operator's first write.
    assert created["status"] == {"observedGeneration": 0}
    api.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        "generatedprojects",
        "demo",
        {"status": {"phase": "Completed", "totalFiles": 3}},
    )
    body = copy.deepcopy(
        api.get_namespaced_custom_object(GROUP, VERSION, namespace, "generatedprojects", "demo")
    )
    body["status"] = {"phase": "Failed", "totalFiles": 99}
    body["spec"]["archived"] = True
    api.replace_namespaced_custom_object(GROUP, VERSION, namespace, "generatedprojects", "demo", body)
    after = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "generatedprojects", "demo")
    assert after["spec"]["archived"] is True
    assert after["status"] == {"observedGeneration": 0, "phase": "Completed", "totalFiles": 3}


@pytest.mark.parametrize(
    ("plural", "body", "change", "expected"),
    [
        (
            "generatedprojects",
            project(),
            {"spec": {"projectRef": {"name": "other"}}},
            "projectRef is immutable",
        ),
        (
            "repositoryexports",
            export(),
            {"spec": {"generatedProjectRef": {"name": "other"}}},
            "generatedProjectRef is immutable",
        ),
    ],
)
def test_references_are_immutable(
    api_client: client.ApiClient,
    namespace: str,
    plural: str,
    body: dict[str, Any],
    change: dict[str, Any],
    expected: str,
) -> None:
    api = _custom(api_client)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
    with pytest.raises(ApiException) as err:
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, body["metadata"]["name"], change
        )
    assert err.value.status == 422 and expected in err.value.body


def forge_export(export_type: str, name: str, **config: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"credentialsSecretRef": {"name": "creds"}}
    if export_type == "gitea":
        cfg["apiUrl"] = "https://gitea.example.com"
    cfg.update(config)
    body = export(
        exportType=export_type,
        repositoryName=name,
        config={k: v for k, v in cfg.items() if v is not None},  # None: leave the field out
    )
    body["metadata"]["name"] = f"{export_type}-x"
    return body


# Each forge's documented rules (see projectgen.api.v1alpha1.forges), refused at `kubectl apply`.
FORGE_CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("gitlab-ok", forge_export("gitlab", "a.b_c-d9"), None),
    ("gitlab-trailing-dash", forge_export("gitlab", "api-"), "not a valid GitLab repository name"),
    ("gitlab-leading-underscore", forge_export("gitlab", "_api"), "not a valid GitLab repository name"),
    ("gitlab-consecutive", forge_export("gitlab", "a..b"), "never two of"),
    ("gitlab-dot-git", forge_export("gitlab", "demo.Git"), "not end in .git or .atom"),
    (
        "gitlab-com-internal",
        forge_export("gitlab", "demo", visibility="internal"),
        "gitlab.com does not allow",
    ),
    (
        "gitlab-self-managed-internal",
        forge_export("gitlab", "demo", visibility="internal", apiUrl="https://git.example.com"),
        None,
    ),
    ("github-trailing-dash-ok", forge_export("github", "api-"), None),
    ("github-user-internal", forge_export("github", "demo", visibility="internal"), "needs config.owner"),
    ("github-org-internal", forge_export("github", "demo", visibility="internal", owner="acme"), None),
    ("github-owner-slash", forge_export("github", "demo", owner="acme/team"), "no '/'"),
    ("gitea-ok", forge_export("gitea", "demo", visibility="public", owner="acme"), None),
    ("gitea-dotdot", forge_export("gitea", "a..b"), "not a valid Gitea repository name"),
    ("gitea-wiki", forge_export("gitea", "notes.wiki"), "not a valid Gitea repository name"),
    ("gitea-internal", forge_export("gitea", "demo", visibility="internal"), "there is no internal"),
    ("gitea-no-api-url", forge_export("gitea", "demo", apiUrl=None), "needs config.apiUrl"),
    ("github-app-ok", forge_export("github", "demo", owner="acme", githubApp={}), None),
    (
        "github-app-keys-ok",
        forge_export("github", "demo", githubApp={"appIdKey": "id", "privateKeyKey": "app.pem"}),
        None,
    ),
    (
        "gitlab-github-app",
        forge_export("gitlab", "demo", githubApp={}),
        "config.githubApp is for exportType github",
    ),
    (
        "gitea-github-app",
        forge_export("gitea", "demo", githubApp={}),
        "config.githubApp is for exportType github",
    ),
]


@pytest.mark.parametrize(("case", "body", "expected"), FORGE_CASES, ids=[c[0] for c in FORGE_CASES])
def test_forge_rules_at_apply_and_in_the_model_agree(
    kubectl: Callable[..., Any], namespace: str, case: str, body: dict[str, Any], expected: str | None
) -> None:
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
    if expected is None:
        assert result.returncode == 0, result.stderr
        RepositoryExportSpec.model_validate(body["spec"])
    else:
        assert result.returncode != 0, f"{case} was accepted"
        assert expected in result.stderr, result.stderr
        with pytest.raises(ValidationError):
            RepositoryExportSpec.model_validate(body["spec"])
