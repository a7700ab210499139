"""Write the CRDs from the pydantic models: the models are the one source of truth.

pydantic emits JSON Schema; the API server wants a *structural* OpenAPI v3 schema:
no `$ref`, no `anyOf` with null (`nullable` instead), no `title`, no
`additionalProperties: false`, and free-form maps marked
`x-kubernetes-preserve-unknown-fields`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from projectgen.api.v1alpha1 import GROUP, VERSION
from projectgen.api.v1alpha1 import generatedproject as gp
from projectgen.api.v1alpha1 import repositoryexport as rexp

CATEGORY = "projectgen"
_DROP = {"title", "$defs", "discriminator"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(x, defs) for x in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        rules = target.get("x-kubernetes-validations", []) + node.pop("x-kubernetes-validations", [])
        target.update(node)
        if rules:
            target["x-kubernetes-validations"] = rules
        node = target
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1 and len(node["anyOf"]) == 2:
            del node["anyOf"]
            merged = dict(options[0])
            rules = merged.get("x-kubernetes-validations", []) + node.pop("x-kubernetes-validations", [])
            merged.update(node)
            if rules:
                merged["x-kubernetes-validations"] = rules
            node = merged
            node["nullable"] = True
            return _structural(node, defs)
        raise ValueError(f"cannot make a structural schema of anyOf {node['anyOf']!r}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "default" and value is None:
            continue
        if key == "additionalProperties":
            if value is False:
                continue
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
                continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        else:
            out[key] = _structural(value, defs)
    if "items" in node and isinstance(node["items"], dict) and "items" in out:
        out["items"] = _structural(node["items"], defs)
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one model."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    result: dict[str, Any] = _structural(schema, defs)
    return result


MAX_SELECTABLE_FIELDS = 8  # the API server's limit per version
_SELECTABLE_TYPES = ("string", "integer", "boolean")


def selectable_fields(schema: dict[str, Any], paths: tuple[str, ...]) -> list[dict[str, str]]:
    """The `selectableFields` of a version, checked as the API server checks them.

    At most 8, unique, simple paths (no list indexing, not under `metadata`), each to a field of
    the schema whose type is string, integer or boolean. Checked here so that a model change that
    breaks one fails `projectgen crds`, not a `kubectl apply` of the CRD.
    """
    if len(paths) > MAX_SELECTABLE_FIELDS or len(set(paths)) != len(paths):
        raise ValueError(f"selectableFields: at most {MAX_SELECTABLE_FIELDS}, unique: {paths!r}")
    for path in paths:
        parts = path.split(".")
        if parts[0] != "" or len(parts) < 2 or parts[1] == "metadata" or any(not p for p in parts[1:]):
            raise ValueError(f"selectableFields: {path!r} is not a simple path outside metadata")
        node: dict[str, Any] | None = schema
        for part in parts[1:]:
            node = ((node or {}).get("properties") or {}).get(part)
            if node is None:
                raise ValueError(f"selectableFields: {path!r} is not in the schema")
        assert node is not None
        if node.get("type") not in _SELECTABLE_TYPES:
            raise ValueError(f"selectableFields: {path!r} is a {node.get('type')}, not a string/int/bool")
    return [{"jsonPath": path} for path in paths]


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    spec: type[BaseModel],
    status: type[BaseModel],
    description: str,
    columns: list[dict[str, Any]],
    selectable: tuple[str, ...],
) -> dict[str, Any]:
    schema = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of the object."},
            "kind": {"type": "string", "description": "Kind of the object."},
            "metadata": {"type": "object"},
            "spec": openapi_schema(spec),
            # A new object reads back with observedGeneration 0, so kstatus
            # (Flux, kubectl wait) sees it InProgress, not Current, before the
            # operator's first status write.
            "status": {**openapi_schema(status), "default": {"observedGeneration": 0}},
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "projectgen"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "selectableFields": selectable_fields(schema, selectable),
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


_READY = '.status.conditions[?(@.type=="Ready")].status'
# The Ready condition says why in every phase (waiting, failed, done); errorMessage only on failure.
_READY_MESSAGE = '.status.conditions[?(@.type=="Ready")].message'


def generated_project_crd() -> dict[str, Any]:
    return _crd(
        kind=gp.KIND,
        plural=gp.PLURAL,
        short_names=["gp", "genproj"],
        spec=gp.GeneratedProjectSpec,
        status=gp.GeneratedProjectStatus,
        selectable=gp.SELECTABLE_FIELDS,
        description="A software project generated from templates, ConfigMaps and inline files into the "
        "operator's volume.",
        columns=[
            {"name": "Project", "type": "string", "jsonPath": ".spec.projectRef.name"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Ready", "type": "string", "jsonPath": _READY},
            {"name": "Files", "type": "integer", "jsonPath": ".status.totalFiles"},
            {"name": "Size", "type": "integer", "jsonPath": ".status.totalSize", "description": "Bytes"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            {"name": "Engine", "type": "string", "jsonPath": ".status.engines[0].engine", "priority": 1},
            {"name": "Template", "type": "string", "jsonPath": ".status.template.tag", "priority": 1},
            {"name": "Commit", "type": "string", "jsonPath": ".status.template.commit", "priority": 1},
            {"name": "Output", "type": "string", "jsonPath": ".status.outputDirectory", "priority": 1},
            {"name": "Message", "type": "string", "jsonPath": _READY_MESSAGE, "priority": 1},
        ],
    )


def repository_export_crd() -> dict[str, Any]:
    return _crd(
        kind=rexp.KIND,
        plural=rexp.PLURAL,
        short_names=["rexp"],
        spec=rexp.RepositoryExportSpec,
        status=rexp.RepositoryExportStatus,
        selectable=rexp.SELECTABLE_FIELDS,
        description="Exports one GeneratedProject as a zip / tar / tar.gz archive in the operator's volume, "
        "or publishes it as a new GitHub or GitLab repository.",
        columns=[
            {"name": "Project", "type": "string", "jsonPath": ".spec.generatedProjectRef.name"},
            {"name": "Type", "type": "string", "jsonPath": ".spec.exportType"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Ready", "type": "string", "jsonPath": _READY},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            {"name": "Archive", "type": "string", "jsonPath": ".status.archivePath", "priority": 1},
            {"name": "Repository", "type": "string", "jsonPath": ".status.repositoryUrl", "priority": 1},
            {"name": "PR", "type": "string", "jsonPath": ".status.pullRequest.url", "priority": 1},
            {"name": "Creator", "type": "string", "jsonPath": ".status.createdBy", "priority": 1},
            {"name": "Message", "type": "string", "jsonPath": _READY_MESSAGE, "priority": 1},
        ],
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD object."""
    return {
        f"{gp.PLURAL}.{GROUP}.yaml": generated_project_crd(),
        f"{rexp.PLURAL}.{GROUP}.yaml": repository_export_crd(),
    }


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `projectgen crds` from operator/projectgen/api/v1alpha1. Do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100, allow_unicode=True)


def rendered_files() -> dict[str, str]:
    """Every file of `crds/`: the CRDs and the kustomization that lets `manifests/` include them."""
    files = {name: render(crd) for name, crd in all_crds().items()}
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(files),
    }
    files["kustomization.yaml"] = "# Generated by `projectgen crds`. Do not edit.\n" + yaml.safe_dump(
        kustomization, sort_keys=False
    )
    return files


def write_crds(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_files().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_crds(directory: Path) -> list[str]:
    """Names of the checked-in files that differ from what the models generate."""
    return [
        name
        for name, text in rendered_files().items()
        if not (directory / name).exists() or (directory / name).read_text(encoding="utf-8") != text
    ]
