"""`projectgen render`: render a GeneratedProject on a workstation, without a cluster.

    projectgen render -f generatedproject.yaml -o DIR [--manifest FILE] [--configmap FILE ...]
                      [--policy FILE [--namespace NS] [--namespace-label K=V ...]]

The same code as the operator renders the same files; ConfigMaps come from files instead
of the namespace. Nothing is written outside DIR (and FILE): the render happens in a hidden
directory inside DIR whose entries are moved up when it succeeded.

It runs with its caller's own network identity, so no outbound policy applies unless one is
given: `--policy FILE` (the operator's policy.yaml) checks template URLs as the operator would
for the namespace (`--namespace`, default the resource's; `--namespace-label` for selectors).
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from projectgen import outbound
from projectgen.api.v1alpha1.generatedproject import KIND, GeneratedProject, GeneratedProjectSpec
from projectgen.api.validation import field_errors
from projectgen.cli.output import CommandError, warn
from projectgen.generation.errors import GenerationError
from projectgen.generation.render import RenderResult, TemplateOptions, render_project
from projectgen.generation.sandbox import Limits
from projectgen.generation.sources import ConfigMapData, decode_configmap
from projectgen.generation.template import generation_clock
from projectgen.settings import Settings
from projectgen.storage import TREE

STAGING_PREFIX = ".projectgen-staging-"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="projectgen render",
        description="Render a GeneratedProject into a directory, as the operator would, without a cluster.",
    )
    add_input_arguments(parser)
    parser.add_argument(
        "-o", "--output", required=True, type=Path, help="directory to create (must be empty)"
    )
    parser.add_argument("--manifest", type=Path, help="write the manifest (JSON, previews included) here")
    args = parser.parse_args(argv)
    given = load_input(args)

    out = Path(os.path.abspath(args.output))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CommandError(f"{out} exists and is not an empty directory; refusing to write into it")
    created = _first_missing(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create {out}: {exc.strerror}") from exc

    staging = Path(os.path.abspath(out / f"{STAGING_PREFIX}{os.urandom(4).hex()}"))
    try:
        staging.mkdir()
        result = render_input(given, staging / TREE, staging)
        for entry in sorted(os.listdir(staging / TREE)):
            os.rename(staging / TREE / entry, out / entry)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        if isinstance(exc, GenerationError):
            raise CommandError(str(exc)) from exc
        raise
    shutil.rmtree(staging, ignore_errors=True)

    m = result.manifest
    if args.manifest is not None:
        m.dump(Path(os.path.abspath(args.manifest)))
    for warning in result.warnings:
        warn(warning)
    print(
        f"rendered {m.total_files:,} files, {m.total_size:,} bytes, contentHash {m.content_hash} into {out}"
    )
    return 0


@dataclass(frozen=True)
class Input:
    """What a render needs, from the command line: the spec, its ConfigMaps, the policy."""

    spec: GeneratedProjectSpec
    configmaps: dict[str, ConfigMapData]
    guard: outbound.Guard | None
    created_at: str | None


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that say what to render (shared by `render` and `diff`)."""
    parser.add_argument(
        "-f", "--file", required=True, type=Path, help="GeneratedProject YAML (multi-doc allowed)"
    )
    parser.add_argument(
        "--configmap",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="ConfigMap YAML the spec refers to (repeatable; multi-doc allowed)",
    )
    parser.add_argument(
        "--policy", type=Path, metavar="FILE", help="apply this outbound policy (the operator's policy.yaml)"
    )
    parser.add_argument("--namespace", help="namespace the policy is applied for (default: the resource's)")
    parser.add_argument(
        "--namespace-label",
        action="append",
        default=[],
        metavar="K=V",
        help="a label of that namespace, for the policy's namespaceSelectors (repeatable)",
    )


def load_input(args: argparse.Namespace) -> Input:
    guard: outbound.Guard | None = None
    try:
        if args.policy is not None:
            labels = dict(label.partition("=")[::2] for label in args.namespace_label)
            namespace = args.namespace or _namespace_of(args.file)
            guard = outbound.Guard(
                outbound.load_policy(args.policy), namespace, labels, origin=f"the policy {args.policy}"
            )
        spec, configmaps, created_at = _load_spec(args.file)
        for path in args.configmap:
            configmaps.update(_load_configmaps(path))
        _check_configmaps_given(spec, configmaps)
    except (GenerationError, outbound.PolicyError) as exc:
        raise CommandError(str(exc)) from exc
    return Input(spec, configmaps, guard, created_at)


def render_input(given: Input, tree: Path, workdir: Path) -> RenderResult:
    """Render as the operator does (same limits, same clock rule) into `tree`."""
    templates = TemplateOptions(
        limits=Limits.from_settings(Settings.from_env()),
        clock=generation_clock(given.created_at, os.environ.get("SOURCE_DATE_EPOCH")),
    )
    return render_project(
        given.spec,
        tree,
        configmaps=given.configmaps.get,
        workdir=workdir,
        templates=templates,
        guard=given.guard,
    )


def _first_missing(path: Path) -> Path | None:
    """The outermost directory that creating `path` creates (removed again on failure)."""
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path} is not UTF-8 text") from exc
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise CommandError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    for doc in docs:
        if not isinstance(doc, dict):
            raise CommandError(f"{path}: every YAML document must be a mapping (a Kubernetes object)")
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            for item in doc["items"]:
                if isinstance(item, dict):
                    yield item
        else:
            yield doc


def _namespace_of(path: Path) -> str:
    for doc in _documents(path):
        if doc.get("kind") in (KIND, None):
            metadata = doc.get("metadata")
            namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
            return namespace if isinstance(namespace, str) else "default"
    return "default"


def _load_spec(path: Path) -> tuple[GeneratedProjectSpec, dict[str, ConfigMapData], str | None]:
    """The one GeneratedProject of the file (ConfigMaps in the same file are used too), and its
    metadata.creationTimestamp if it has one."""
    found: list[dict[str, Any]] = []
    configmaps: dict[str, ConfigMapData] = {}
    for doc in _documents(path):
        kind = doc.get("kind")
        if kind == KIND or (kind is None and "spec" in doc):
            found.append(doc)
        elif kind == "ConfigMap":
            name, data = _configmap(doc, path)
            configmaps[name] = data
    if len(found) != 1:
        raise CommandError(f"{path}: expected one {KIND} object, found {len(found)}")
    try:
        spec = GeneratedProject.model_validate(found[0]).spec
    except ValidationError as exc:
        lines = field_errors(exc, root="")
        raise CommandError(f"{path}: invalid {KIND}:\n  " + "\n  ".join(lines)) from exc
    metadata = found[0].get("metadata")
    created = metadata.get("creationTimestamp") if isinstance(metadata, dict) else None
    return spec, configmaps, str(created) if created else None


def _load_configmaps(path: Path) -> dict[str, ConfigMapData]:
    result: dict[str, ConfigMapData] = {}
    for doc in _documents(path):
        if doc.get("kind") != "ConfigMap":
            raise CommandError(f"{path}: expected ConfigMap objects, found kind {doc.get('kind')!r}")
        name, data = _configmap(doc, path)
        result[name] = data
    return result


def _configmap(doc: dict[str, Any], path: Path) -> tuple[str, ConfigMapData]:
    try:
        return decode_configmap(doc)
    except GenerationError as exc:
        raise CommandError(f"{path}: {exc}") from exc


def _check_configmaps_given(spec: GeneratedProjectSpec, configmaps: dict[str, ConfigMapData]) -> None:
    for i, source in enumerate(spec.sources):
        if source.config_map is not None:
            where, name = f"sources[{i}].configMap", source.config_map.name
        elif source.template is not None and source.template.config_map is not None:
            where, name = f"sources[{i}].template.configMap", source.template.config_map.name
        else:
            continue
        if name not in configmaps:
            raise GenerationError(f"{where}: ConfigMap {name!r} not given (use --configmap FILE)")
