"""The CRDs are generated from the models, checked in, and structural."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from projectgen import crdgen
from projectgen.api.v1alpha1 import GeneratedProjectSpec, RepositoryExportSpec

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_checked_in_crds_match_the_models() -> None:
    assert crdgen.stale_crds(CRDS) == [], "run `projectgen crds` and commit the result"


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    out = [(path, node)]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _walk(value, f"{path}[{i}]")
    return out


@pytest.mark.parametrize("name", sorted(crdgen.all_crds()))
def test_schema_is_structural_and_described(name: str) -> None:
    crd = yaml.safe_load((CRDS / name).read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        if not isinstance(node, dict):
            continue
        for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "title", "$defs"):
            assert forbidden not in node, f"{name}{path} has {forbidden}"
        assert node.get("additionalProperties") is not False, f"{name}{path}"
        if path.endswith(".properties"):
            for field, sub in node.items():
                if field in ("metadata", "apiVersion", "kind"):
                    continue
                assert sub.get("description"), f"{name}{path}.{field} has no description"
                assert "type" in sub or sub.get("x-kubernetes-preserve-unknown-fields"), f"{path}.{field}"
        if node.get("type") == "string" and not path.endswith((".apiVersion", ".kind")):
            assert "maxLength" in node or "enum" in node or "format" in node, f"{name}{path} unbounded"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{name}{path} has no maxItems"


BAD_PATHS = ["../x", "a/../../b", "/etc/passwd", "./..", "a/./b", "a//b", "a/", "a\\..\\b", "a\x00b", ""]


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_models_refuse_the_paths_the_crd_refuses(bad: str) -> None:
    with pytest.raises(ValidationError):
        GeneratedProjectSpec.model_validate(
            {"projectRef": {"name": "p"}, "sources": [{"inline": {"files": [{"path": bad, "content": ""}]}}]}
        )


def test_source_needs_exactly_one_kind() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        GeneratedProjectSpec.model_validate(
            {
                "projectRef": {"name": "p"},
                "sources": [
                    {"inline": {"files": [{"path": "a", "content": ""}]}, "configMap": {"name": "c"}}
                ],
            }
        )


def test_publish_needs_credentials() -> None:
    with pytest.raises(ValidationError, match="credentialsSecretRef"):
        RepositoryExportSpec.model_validate(
            {"generatedProjectRef": {"name": "p"}, "exportType": "github", "repositoryName": "r"}
        )
    spec = RepositoryExportSpec.model_validate(
        {
            "generatedProjectRef": {"name": "p"},
            "exportType": "github",
            "repositoryName": "r",
            "config": {"credentialsSecretRef": {"name": "gh"}},
        }
    )
    assert spec.config is not None
    assert spec.config.visibility == "private" and spec.config.default_branch == "main"
    assert spec.config.credentials_secret_ref.key == "token"


def _export(export_type: str, name: str, **config: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"credentialsSecretRef": {"name": "t"}}
    if export_type == "gitea":
        cfg["apiUrl"] = "https://gitea.example.com"
    cfg.update(config)
    cfg = {k: v for k, v in cfg.items() if v is not None}  # None: leave the field out
    return {
        "generatedProjectRef": {"name": "p"},
        "exportType": export_type,
        "repositoryName": name,
        "config": cfg,
    }


# (exportType, repositoryName, config, accepted): each forge's documented name and visibility rules.
FORGE_CASES: list[tuple[str, str, dict[str, Any], bool]] = [
    ("gitlab", "billing-api", {}, True),
    ("gitlab", "a.b_c-d9", {}, True),
    ("gitlab", "api-", {}, False),  # ends with a special character
    ("gitlab", "-api", {}, False),
    ("gitlab", "_api", {}, False),
    ("gitlab", "a..b", {}, False),  # consecutive special characters
    ("gitlab", "a-_b", {}, False),
    ("gitlab", "demo.git", {}, False),
    ("gitlab", "demo.ATOM", {}, False),
    ("gitlab", "demo", {"visibility": "internal"}, False),  # gitlab.com: no internal for new projects
    ("gitlab", "demo", {"visibility": "internal", "apiUrl": "https://gitlab.com"}, False),
    ("gitlab", "demo", {"visibility": "internal", "apiUrl": "https://git.example.com"}, True),
    ("github", "api-", {}, True),
    ("github", "_a..b", {}, True),
    ("github", "demo", {"visibility": "internal"}, False),  # a user's repository cannot be internal
    ("github", "demo", {"visibility": "internal", "owner": "acme"}, True),
    ("github", "demo", {"owner": "acme/team"}, False),
    ("gitea", "demo", {"visibility": "public", "owner": "acme"}, True),
    ("gitea", "a..b", {}, False),
    ("gitea", "-", {}, False),
    ("gitea", "notes.wiki", {}, False),
    ("gitea", "feed.RSS", {}, False),
    ("gitea", "demo", {"visibility": "internal"}, False),
    ("gitea", "demo", {"apiUrl": None}, False),
]


@pytest.mark.parametrize(("export_type", "name", "config", "accepted"), FORGE_CASES)
def test_models_apply_each_forges_rules(
    export_type: str, name: str, config: dict[str, Any], accepted: bool
) -> None:
    body = _export(export_type, name, **config)
    if accepted:
        RepositoryExportSpec.model_validate(body)
    else:
        with pytest.raises(ValidationError):
            RepositoryExportSpec.model_validate(body)


def test_gitlab_name_error_says_what_is_allowed() -> None:
    with pytest.raises(ValidationError, match=re.escape("never two of '_', '.', '-' in a row")):
        RepositoryExportSpec.model_validate(_export("gitlab", "a..b"))


@pytest.mark.parametrize(
    ("name", "paths"),
    [
        (
            "generatedprojects.projectgen.io.yaml",
            [
                ".spec.projectRef.name",
                ".status.phase",
                ".status.createdBy",
                ".status.template.url",
                ".status.template.tag",
            ],
        ),
        (
            "repositoryexports.projectgen.io.yaml",
            [".spec.exportType", ".spec.generatedProjectRef.name", ".status.phase", ".status.createdBy"],
        ),
    ],
)
def test_crds_declare_the_selectable_fields(name: str, paths: list[str]) -> None:
    version = yaml.safe_load((CRDS / name).read_text())["spec"]["versions"][0]
    assert [f["jsonPath"] for f in version["selectableFields"]] == paths


@pytest.mark.parametrize(
    ("paths", "why"),
    [
        ((".spec.sources",), "not a string/int/bool"),
        ((".status.files",), "not a string/int/bool"),
        ((".spec.nothere",), "not in the schema"),
        ((".metadata.name",), "outside metadata"),
        (("spec.archived",), "simple path"),
        ((".spec..archived",), "simple path"),
        ((".spec.archived", ".spec.archived"), "unique"),
        (tuple(f".status.f{i}" for i in range(9)), "at most 8"),
    ],
)
def test_selectable_fields_are_refused_as_the_api_server_refuses_them(
    paths: tuple[str, ...], why: str
) -> None:
    schema = crdgen.generated_project_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    with pytest.raises(ValueError, match=why):
        crdgen.selectable_fields(schema, paths)


def test_selectable_fields_accept_strings_integers_and_booleans() -> None:
    schema = crdgen.generated_project_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    paths = (".spec.archived", ".status.totalFiles", ".status.phase")
    assert crdgen.selectable_fields(schema, paths) == [{"jsonPath": p} for p in paths]
