"""GeneratedProject: what to generate (spec) and what was generated (status)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field, model_validator

from projectgen.api.v1alpha1.common import (
    CONFIGMAP_KEY_PATTERN,
    HANDLED_FIELD,
    MAX_PATH,
    Conditions,
    CreatedBy,
    HandledConfiguration,
    LocalObjectReference,
    Message,
    Model,
    ObjectName,
    RelativePath,
    Sha256,
)

KIND = "GeneratedProject"
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
"""A Go / Kubernetes duration as Flux spells its pattern: '1h', '90s', '1h30m'."""
PLURAL = "generatedprojects"
MAX_SOURCES = 10
MAX_INLINE_FILES = 200
MAX_INLINE_CONTENT = 1_572_864  # the API server refuses requests over 3 MiB anyway
MAX_STATUS_FILES = 5000
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
"""Standard base64 with padding, as `base64.b64decode(validate=True)` accepts it."""
# Fields `kubectl get --field-selector` can filter on, served by the API server (the CRD's
# selectableFields): every generation of a project, every failed one, everything a user created,
# every project on a template (URL) at a version (tag): the fleet view.
SELECTABLE_FIELDS = (
    ".spec.projectRef.name",
    ".status.phase",
    ".status.createdBy",
    ".status.template.url",
    ".status.template.tag",
)
# Set by the operator on every GeneratedProject: what label selectors (and kopf sharding) can use.
PROJECT_LABEL = "projectgen.io/project"


class InlineFile(Model):
    """A file given in the spec itself."""

    path: RelativePath = Field(description="Path of the file in the project, relative, '/'-separated.")
    content: str | None = Field(
        default=None, max_length=MAX_INLINE_CONTENT, description="Text content of the file (UTF-8)."
    )
    content_base64: str | None = Field(
        default=None,
        alias="contentBase64",
        max_length=MAX_INLINE_CONTENT * 4 // 3 + 4,
        # Checked by the API server at `kubectl apply`. A pattern, not `format: byte`: CEL rules on the
        # file would then see bytes, decoded in a way that refuses valid standard base64 ('+', '/').
        pattern=BASE64_PATTERN,
        description="Binary content of the file, base64-encoded. Exactly one of content and contentBase64.",
    )
    executable: bool = Field(default=False, description="Give the file mode 0755 instead of 0644.")

    @model_validator(mode="after")
    def _one_content(self) -> InlineFile:
        if (self.content is None) == (self.content_base64 is None):
            raise ValueError(f"file {self.path!r}: set exactly one of content and contentBase64")
        if self.content_base64 is not None:
            try:
                base64.b64decode(self.content_base64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"file {self.path!r}: contentBase64 is not valid base64") from exc
        return self

    def data(self) -> bytes:
        if self.content_base64 is not None:
            return base64.b64decode(self.content_base64)
        return (self.content or "").encode("utf-8")


InlineFile.model_config["json_schema_extra"] = {
    "x-kubernetes-validations": [
        {
            "rule": "has(self.content) != has(self.contentBase64)",
            "message": "set exactly one of content and contentBase64",
        }
    ]
}


class InlineSource(Model):
    """Files written out as given."""

    files: list[InlineFile] = Field(
        min_length=1, max_length=MAX_INLINE_FILES, description="The files, applied in order."
    )


class KeyToPath(Model):
    """Maps one ConfigMap key to a path, as in a ConfigMap volume."""

    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=CONFIGMAP_KEY_PATTERN,
        description="The key in the ConfigMap (data or binaryData).",
    )
    path: RelativePath = Field(description="Where the key's value is written in the project.")


class ConfigMapSource(Model):
    """Files from a ConfigMap in the same namespace, laid out like a ConfigMap volume."""

    name: ObjectName = Field(description="Name of the ConfigMap, in the namespace of this resource.")
    items: list[KeyToPath] | None = Field(
        default=None,
        max_length=MAX_INLINE_FILES,
        description="Keys to project, and where. Without items every key (data and binaryData) "
        "becomes a top-level file named after the key.",
    )


class TaskPolicy(StrEnum):
    """What to do with a template's `_tasks`."""

    SKIP = "Skip"
    FAIL = "Fail"
    RUN = "Run"


class TemplateEngine(StrEnum):
    """Which tool's templates a template source holds."""

    COPIER = "copier"
    COOKIECUTTER = "cookiecutter"


class HookPolicy(StrEnum):
    """What to do with a cookiecutter template's hooks (`hooks/pre_prompt`, `hooks/pre_gen_project`,
    `hooks/post_gen_project`)."""

    RUN = "Run"
    SKIP = "Skip"
    FAIL = "Fail"


class TemplateLimits(Model):
    """Lower limits for one template's render; a value above the operator's own is ignored."""

    cpu_seconds: int | None = Field(
        default=None, alias="cpuSeconds", ge=1, le=86400, description="CPU seconds of the render."
    )
    wall_seconds: int | None = Field(
        default=None,
        alias="wallSeconds",
        ge=1,
        le=86400,
        description="Wall-clock seconds before the render is killed.",
    )
    memory_mib: int | None = Field(
        default=None,
        alias="memoryMiB",
        ge=64,
        le=1 << 20,
        description="Address space of the render process, in MiB.",
    )
    file_size_mib: int | None = Field(
        default=None,
        alias="fileSizeMiB",
        ge=1,
        le=1 << 20,
        description="Largest file the render may write, in MiB.",
    )
    output_mib: int | None = Field(
        default=None,
        alias="outputMiB",
        ge=1,
        le=1 << 20,
        description="Total bytes the render may write, in MiB.",
    )
    output_files: int | None = Field(
        default=None,
        alias="outputFiles",
        ge=1,
        le=10**8,
        description="Files and directories the render may write.",
    )


class TemplateSource(Model):
    """A copier or cookiecutter template, rendered with the given answers in a sandboxed process.
    copier renders as `copier copy --trust --skip-tasks`: Jinja extensions load, migrations do
    not apply to a copy, tasks run only with `tasks: Run`. cookiecutter renders as
    `cookiecutter --no-input` with `data` as the extra context, hooks included (in the sandbox);
    the project is the contents of the one directory the template renders, with a `.cruft.json`."""

    url: str | None = Field(
        default=None,
        max_length=2048,
        json_schema_extra={
            "format": "uri",
            "x-kubernetes-validations": [
                {
                    "rule": "self.startsWith('https://') || self.startsWith('http://')",
                    "message": "must be an https:// or http:// git URL",
                }
            ],
        },
        description="Git URL of the template repository (https:// or http://).",
    )
    config_map: ConfigMapSource | None = Field(
        default=None,
        alias="configMap",
        description="A ConfigMap holding the template's files (use items to give them paths).",
    )
    ref: str | None = Field(
        default=None,
        max_length=255,
        pattern=r"^[A-Za-z0-9._/@^~+<>=!,* -]+$",
        description="Git ref of the template to render: a tag or commit (pinned), a branch (follows its "
        "head), or a PEP 440 version constraint such as '>=1.2,<2', '~=1.2' or '==1.*' (follows the "
        "newest matching tag). Default: the newest tag that is a final release, else HEAD (follows).",
    )
    update_interval: str | None = Field(
        default=None,
        alias="updateInterval",
        max_length=32,
        pattern=DURATION_PATTERN,
        description="How often the operator checks whether a following ref (constraint, branch, none) "
        "resolves to a new commit, as a Kubernetes duration ('1h', '15m'); a new resolution renders "
        "again. Default 1h; at least the operator's minimum (default 1m); '0s' never checks.",
    )
    engine: TemplateEngine | None = Field(
        default=None,
        description="copier or cookiecutter. Default: detected from the template's files, copier.yml or "
        "copier.yaml (copier) against cookiecutter.json (cookiecutter); a template with both or neither "
        "needs it set.",
    )
    directory: RelativePath | None = Field(
        default=None,
        description="cookiecutter only: the template lives in this directory of the repository or "
        "ConfigMap (cookiecutter's --directory); recorded in .cruft.json.",
    )
    subdirectory: RelativePath | None = Field(
        default=None, description="Render only this subdirectory of the generated output."
    )
    data: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="Answers to the template's questions (copier), or the context values that override "
        "cookiecutter.json's defaults (cookiecutter); nothing is prompted.",
    )
    tasks: TaskPolicy = Field(
        default=TaskPolicy.SKIP,
        description="What to do with a template that has _tasks: Skip renders without them (a Warning "
        "Event names them), Fail fails the source, Run runs them in the render sandbox (no network; only "
        "the sandbox's programs; a failing task fails the source with its stderr).",
    )
    hooks: HookPolicy = Field(
        default=HookPolicy.RUN,
        description="cookiecutter only: what to do with the template's hooks (pre_prompt, pre_gen_project, "
        "post_gen_project). Run runs them inside the render sandbox; Skip renders without them (a "
        "Warning Event names them); Fail refuses a template that has hooks.",
    )
    limits: TemplateLimits | None = Field(
        default=None,
        description="Lower the operator's sandbox limits for this template's render (never raise them).",
    )

    @model_validator(mode="after")
    def _one_origin(self) -> TemplateSource:
        if (self.url is None) == (self.config_map is None):
            raise ValueError("template: set exactly one of url and configMap")
        if self.url is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError(f"template url {self.url!r} must be an https:// or http:// git URL")
        return self


TemplateSource.model_config["json_schema_extra"] = {
    "x-kubernetes-validations": [
        {"rule": "has(self.url) != has(self.configMap)", "message": "set exactly one of url and configMap"}
    ]
}


class Source(Model):
    """One source of files. Exactly one of inline, configMap and template."""

    inline: InlineSource | None = Field(default=None, description="Files given in the spec.")
    config_map: ConfigMapSource | None = Field(
        default=None, alias="configMap", description="Files from a ConfigMap in the same namespace."
    )
    template: TemplateSource | None = Field(
        default=None, description="A copier or cookiecutter template to render."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        if sum(x is not None for x in (self.inline, self.config_map, self.template)) != 1:
            raise ValueError("each source must set exactly one of inline, configMap and template")
        return self

    @property
    def kind(self) -> str:
        return "inline" if self.inline else "configMap" if self.config_map else "template"


Source.model_config["json_schema_extra"] = {
    "x-kubernetes-validations": [
        {
            "rule": "[has(self.inline), has(self.configMap), has(self.template)].filter(x, x).size() == 1",
            "message": "set exactly one of inline, configMap and template",
        }
    ]
}


class GeneratedProjectSpec(Model):
    """What to generate."""

    project_ref: LocalObjectReference = Field(
        alias="projectRef",
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "projectRef is immutable"}]
        },
        description="The project this generation belongs to. Many GeneratedProjects may share one project. "
        "Immutable.",
    )
    workflow_execution_ref: LocalObjectReference | None = Field(
        default=None,
        alias="workflowExecutionRef",
        description="Provenance: the workflow run that asked for this generation.",
    )
    sources: list[Source] = Field(
        min_length=1,
        max_length=MAX_SOURCES,
        description="Where the files come from, applied in order: a later source overrides a file of an "
        "earlier one at the same path.",
    )
    archived: bool = Field(
        default=False,
        description="When true the files are removed from the volume and the phase becomes Archived; "
        "the record stays. Setting it back to false regenerates.",
    )


class RefKind(StrEnum):
    """What a template ref is, and so whether its resolution may move without a spec change."""

    CONSTRAINT = "Constraint"
    LATEST = "Latest"
    BRANCH = "Branch"
    TAG = "Tag"
    COMMIT = "Commit"

    @property
    def follows(self) -> bool:
        return self in (RefKind.CONSTRAINT, RefKind.LATEST, RefKind.BRANCH)


class TemplateResolution(Model):
    """What one template source's ref resolved to at the last render."""

    source: int = Field(ge=0, le=MAX_SOURCES - 1, description="Index of the source in spec.sources.")
    url: str = Field(max_length=2048, description="The template's URL, without credentials.")
    ref: str | None = Field(default=None, max_length=255, description="The ref as asked in the spec.")
    kind: RefKind = Field(
        description="Constraint, Latest (no ref) and Branch follow the repository; Tag and Commit are pinned."
    )
    tag: str | None = Field(
        default=None,
        max_length=255,
        description="The tag the ref resolved to (unset for a branch or commit).",
    )
    commit: str = Field(
        pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$",
        min_length=40,
        max_length=64,
        description="The commit rendered.",
    )


class TemplateEngineRecord(Model):
    """Which engine rendered one template source at the last render."""

    source: int = Field(ge=0, le=MAX_SOURCES - 1, description="Index of the source in spec.sources.")
    engine: TemplateEngine = Field(description="copier or cookiecutter, as set or detected.")


class GeneratedProjectPhase(StrEnum):
    PENDING = "Pending"
    GENERATING = "Generating"
    COMPLETED = "Completed"
    FAILED = "Failed"
    ARCHIVED = "Archived"


class FileRecord(Model):
    """One generated file."""

    path: str = Field(max_length=MAX_PATH, description="Path relative to the project root.")
    name: str = Field(max_length=255, description="File name (last path segment).")
    type: str = Field(max_length=64, description="Detected file type (e.g. python, yaml, binary).")
    size: int = Field(ge=0, description="Size in bytes.")
    sha256: Sha256 = Field(description="SHA-256 of the content (of a symlink: of its target), lowercase hex.")
    target: str | None = Field(
        default=None,
        max_length=1024,
        description="A symlink's target, relative and inside the project (type symlink); unset for a file.",
    )
    preview: str | None = Field(
        default=None,
        max_length=1000,
        description="First 1000 characters of a text file. Kept in manifest.json, not in status.",
    )


class GeneratedProjectStatus(Model):
    """What the operator generated, and how it went."""

    phase: GeneratedProjectPhase | None = Field(
        default=None, description="Pending, Generating, Completed, Failed or Archived."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, alias="observedGeneration", description="The metadata.generation last acted on."
    )
    conditions: Conditions | None = Field(
        default=None, description="kstatus conditions: Ready, Reconciling, Stalled."
    )
    output_directory: str | None = Field(
        default=None,
        alias="outputDirectory",
        max_length=4096,
        description="Directory in the operator's volume holding the complete generated tree.",
    )
    total_files: int | None = Field(default=None, ge=0, alias="totalFiles", description="Number of files.")
    total_size: int | None = Field(
        default=None, ge=0, alias="totalSize", description="Sum of the file sizes, in bytes."
    )
    content_hash: Sha256 | None = Field(
        default=None,
        alias="contentHash",
        description="SHA-256 over the sorted manifest (paths, modes, contents): changes when the output does.",
    )
    files: list[FileRecord] | None = Field(
        default=None,
        max_length=MAX_STATUS_FILES,
        description="One record per file, capped (see filesTruncated); the full manifest is manifest.json "
        "beside the tree.",
    )
    files_truncated: bool | None = Field(
        default=None, alias="filesTruncated", description="True when files lists only the first files."
    )
    error_message: Message | None = Field(
        default=None, alias="errorMessage", description="Why the last generation failed."
    )
    created_by: CreatedBy | None = Field(default=None, alias="createdBy")
    templates: list[TemplateResolution] | None = Field(
        default=None,
        max_length=MAX_SOURCES,
        description="What each template source from git resolved to at the last render, in source order.",
    )
    template: TemplateResolution | None = Field(
        default=None,
        description="The first of templates: what `kubectl get -o wide` shows and --field-selector "
        "filters on (status.template.url, status.template.tag).",
    )
    engines: list[TemplateEngineRecord] | None = Field(
        default=None,
        max_length=MAX_SOURCES,
        description="The engine of each template source (from git or a ConfigMap) at the last render, "
        "in source order.",
    )
    last_handled_configuration: HandledConfiguration | None = Field(default=None, alias=HANDLED_FIELD)
    completed_at: datetime | None = Field(
        default=None, alias="completedAt", description="When the last generation completed."
    )


class GeneratedProject(Model):
    """The whole object, as handed to the operator."""

    model_config = Model.model_config | {"extra": "ignore"}

    spec: GeneratedProjectSpec
    status: GeneratedProjectStatus | None = None
