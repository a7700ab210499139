"""The entry point of generation: a GeneratedProject spec -> a tree of files and its manifest."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from projectgen import outbound
from projectgen.api.v1alpha1.generatedproject import (
    GeneratedProjectSpec,
    TemplateEngineRecord,
    TemplateResolution,
    TemplateSource,
)
from projectgen.generation.errors import GenerationError, SourceUnavailable
from projectgen.generation.manifest import PREVIEW_CHARS, Manifest
from projectgen.generation.refs import Resolution
from projectgen.generation.sources import (
    ConfigMapData,
    ConfigMapLoader,
    ConfigMaps,
    apply_configmap,
    apply_inline,
)
from projectgen.generation.template import TemplateOptions, apply_template, without_credentials
from projectgen.generation.tree import TreeWriter


@dataclass(slots=True)
class RenderResult:
    manifest: Manifest
    warnings: list[str] = field(default_factory=list)
    templates: list[TemplateResolution] = field(default_factory=list)
    """What each template source from git resolved to, in source order."""
    engines: list[TemplateEngineRecord] = field(default_factory=list)
    """The engine of each template source, in source order."""


def render_project(
    spec: GeneratedProjectSpec,
    dest: Path,
    *,
    configmaps: ConfigMapLoader,
    max_preview: int = PREVIEW_CHARS,
    workdir: Path | None = None,
    templates: TemplateOptions | None = None,
    guard: outbound.Guard | None = None,
) -> RenderResult:
    """Apply the sources of `spec` in order into `dest`, a later source overriding a file of an
    earlier one at the same path, and return the manifest of what is there.

    `dest` must be an empty (or missing) directory. Templates are rendered in temporary
    directories under `workdir` (default: `dest`'s parent, which must be on the same file
    system so files are linked, not copied); they are removed before this returns. On an
    error `dest` holds a partial tree: the caller discards it.

    Raises GenerationError (permanent) for what the spec or its inputs got wrong, and
    SourceUnavailable (temporary) for what may heal: a missing ConfigMap, an unreachable
    template repository. Anything else is a bug or the environment (disk full).

    `templates` sets the sandbox limits, the clock templates see and cancellation.
    `guard` applies the outbound policy to template URLs (None: no policy, as offline).
    """
    dest = Path(os.path.abspath(dest))
    dest.mkdir(parents=True, exist_ok=True)
    with os.scandir(dest) as entries:
        if any(True for _ in entries):
            raise ValueError(f"{dest} must be an empty directory")
    workdir = Path(os.path.abspath(workdir)) if workdir is not None else dest.parent
    writer = TreeWriter(dest, max_preview=max_preview)
    loaded = ConfigMaps(configmaps)
    warnings: list[str] = []
    resolved: list[TemplateResolution] = []
    engines: list[TemplateEngineRecord] = []
    for i, source in enumerate(spec.sources):
        where = f"sources[{i}]"
        writer.start_source()
        if source.inline is not None and source.config_map is None and source.template is None:
            apply_inline(writer, source.inline, f"{where}.inline")
        elif source.config_map is not None and source.inline is None and source.template is None:
            apply_configmap(writer, source.config_map, f"{where}.configMap", loaded)
        elif source.template is not None and source.inline is None and source.config_map is None:
            applied = apply_template(
                writer, source.template, f"{where}.template", loaded, workdir, guard, templates
            )
            warnings += applied.notes
            engines.append(TemplateEngineRecord(source=i, engine=applied.engine))
            if applied.resolution is not None:
                resolved.append(record(i, source.template, applied.resolution))
        else:
            raise GenerationError(f"{where}: set exactly one of inline, configMap and template")
    writer.check_links()  # a later source may have replaced a link of a chain
    warnings += writer.case_collisions()
    return RenderResult(manifest=writer.manifest(), warnings=warnings, templates=resolved, engines=engines)


def record(index: int, source: TemplateSource, resolution: Resolution) -> TemplateResolution:
    """The status record of one template source's resolution."""
    return TemplateResolution(
        source=index,
        url=without_credentials(source.url or ""),
        ref=source.ref,
        kind=resolution.kind,
        tag=resolution.tag,
        commit=resolution.commit,
    )


__all__ = [
    "ConfigMapData",
    "ConfigMapLoader",
    "GenerationError",
    "RenderResult",
    "SourceUnavailable",
    "TemplateOptions",
    "render_project",
]
