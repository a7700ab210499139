"""RepositoryExport: ship one GeneratedProject as an archive or a new GitHub/GitLab/Gitea repository."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, model_validator
from pydantic.config import JsonDict, JsonValue

from projectgen.api.v1alpha1.common import (
    CONFIGMAP_KEY_PATTERN,
    HANDLED_FIELD,
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
from projectgen.api.v1alpha1.forges import NAME_RULES, VISIBILITIES, is_gitlab_com

KIND = "RepositoryExport"
PLURAL = "repositoryexports"
# Fields `kubectl get --field-selector` can filter on (the CRD's selectableFields): every export of
# a project, every failed export, all GitHub exports, everything a user exported.
SELECTABLE_FIELDS = (
    ".spec.exportType",
    ".spec.generatedProjectRef.name",
    ".status.phase",
    ".status.createdBy",
)
REPOSITORY_NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
URL_RULE: JsonDict = {
    "rule": "self.startsWith('https://') || self.startsWith('http://')",
    "message": "must be an https:// or http:// URL",
}


class ExportType(StrEnum):
    ZIP = "zip"
    TAR = "tar"
    TAR_GZ = "tar.gz"
    GITHUB = "github"
    GITLAB = "gitlab"
    GITEA = "gitea"

    @property
    def is_archive(self) -> bool:
        return self in ARCHIVE_TYPES


ARCHIVE_TYPES: tuple[ExportType, ...] = (ExportType.ZIP, ExportType.TAR, ExportType.TAR_GZ)
"""The export types written to the volume as an archive; every other type publishes to a forge."""
_CEL_ARCHIVE_TYPES = "[" + ", ".join(f"'{t}'" for t in ARCHIVE_TYPES) + "]"
Topic = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[a-z0-9][a-z0-9-]*$")]


class Visibility(StrEnum):
    PRIVATE = "private"
    INTERNAL = "internal"
    PUBLIC = "public"


class TokenType(StrEnum):
    ACCESS = "access"
    OAUTH = "oauth"


class IfExists(StrEnum):
    FAIL = "Fail"
    ADOPT = "Adopt"
    PULL_REQUEST = "PullRequest"


class RequestState(StrEnum):
    """A pull / merge request's state, the same words on every forge."""

    OPEN = "open"
    MERGED = "merged"
    CLOSED = "closed"


class UpdateStrategy(StrEnum):
    """How a delivery after the first lands (day two)."""

    PULL_REQUEST = "PullRequest"
    PUSH = "Push"


class SecretKeySelector(Model):
    """A key of a Secret in the same namespace as the export."""

    name: ObjectName = Field(description="Name of the Secret, in the namespace of this export.")
    key: str = Field(
        default="token",
        min_length=1,
        max_length=253,
        pattern=CONFIGMAP_KEY_PATTERN,
        description="Key in the Secret holding the token. Default: token.",
    )


class GitHubAppKeys(Model):
    """Which keys of the credentials Secret hold a GitHub App instead of a token."""

    app_id_key: str = Field(
        default="appId",
        alias="appIdKey",
        min_length=1,
        max_length=253,
        pattern=CONFIGMAP_KEY_PATTERN,
        description="Key holding the app's ID (or its client ID). Default: appId.",
    )
    private_key_key: str = Field(
        default="privateKey",
        alias="privateKeyKey",
        min_length=1,
        max_length=253,
        pattern=CONFIGMAP_KEY_PATTERN,
        description="Key holding the app's private key (PEM, as GitHub downloads it). Default: privateKey.",
    )
    installation_id_key: str = Field(
        default="installationId",
        alias="installationIdKey",
        min_length=1,
        max_length=253,
        pattern=CONFIGMAP_KEY_PATTERN,
        description="Key holding the installation ID. Default: installationId. When the Secret has no such "
        "key, the installation is looked up for config.owner (organisation or user).",
    )


class CommitAuthor(Model):
    """Author and committer of the pushed commit."""

    name: str = Field(min_length=1, max_length=256, description="Author name.")
    email: str = Field(
        min_length=3, max_length=256, pattern=r"^[^<>\s]+@[^<>\s]+$", description="Author email."
    )


ForgeName = Annotated[
    str,
    Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x20\x7f,]+$", description="A forge username."),
]
LabelName = Annotated[
    str, Field(min_length=1, max_length=50, pattern=r"^[^\x00-\x1f\x7f,]+$", description="A label name.")
]


class RequestPeople(Model):
    """Who and what an update's pull / merge request gets, beside its text."""

    reviewers: list[ForgeName] | None = Field(
        default=None,
        max_length=20,
        description="Usernames asked for a review when the request is opened (GitHub, Gitea: requested "
        "reviewers; GitLab: reviewers).",
    )
    assignees: list[ForgeName] | None = Field(
        default=None, max_length=20, description="Usernames the request is assigned to when it is opened."
    )
    labels: list[LabelName] | None = Field(
        default=None,
        max_length=20,
        description="Labels the request carries (created in the repository when missing, Gitea and GitHub).",
    )


class PublishConfig(Model):
    """Where and how to publish to GitHub, GitLab or Gitea."""

    owner: str | None = Field(
        default=None,
        max_length=255,
        pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$",
        description="Organisation (GitHub, Gitea) or group path (GitLab) to create the repository in. "
        "Default: the token's user.",
    )
    visibility: Visibility = Field(
        default=Visibility.PRIVATE,
        description="private (default), internal or public. internal: GitHub organisations that belong to "
        "an enterprise, self-managed GitLab; not gitlab.com (new projects), not Gitea. On GitLab a project "
        "is never more visible than its group.",
    )
    description: str | None = Field(default=None, max_length=350, description="Repository description.")
    default_branch: str = Field(
        default="main",
        alias="defaultBranch",
        max_length=255,
        pattern=r"^[A-Za-z0-9._/-]+$",
        description="Branch the project is pushed to. Default: main.",
    )
    topics: list[Topic] | None = Field(
        default=None,
        max_length=20,
        description="Repository topics (lowercase letters, digits and '-').",
    )
    api_url: str | None = Field(
        default=None,
        alias="apiUrl",
        max_length=2048,
        json_schema_extra={"format": "uri", "x-kubernetes-validations": [URL_RULE]},
        description="API base URL for GitHub Enterprise (https://HOST/api/v3), self-managed GitLab "
        "(https://HOST) or Gitea (https://HOST, required). Default: github.com / gitlab.com.",
    )
    credentials_secret_ref: SecretKeySelector = Field(
        alias="credentialsSecretRef",
        description="Secret (same namespace) holding the API token; the token also authenticates the push.",
    )
    github_app: GitHubAppKeys | None = Field(
        default=None,
        alias="githubApp",
        description="exportType github only: the Secret in credentialsSecretRef holds a GitHub App (ID, "
        "private key, optionally the installation ID) instead of a token, and credentialsSecretRef.key is "
        "not used. The operator mints installation tokens and renews them before they expire. {} takes "
        "the default keys.",
    )
    token_type: TokenType = Field(
        default=TokenType.ACCESS,
        alias="tokenType",
        description="access (default): a personal, group or project access token. oauth: a GitLab OAuth 2.0 "
        "access token, sent as 'Authorization: Bearer' (GitLab refuses it as PRIVATE-TOKEN). GitHub and "
        "Gitea take either kind the same way.",
    )
    commit_message: str | None = Field(
        default=None,
        alias="commitMessage",
        max_length=4096,
        description="Message of the pushed commit. Default: 'Generated by projectgen from <project>'.",
    )
    author: CommitAuthor | None = Field(
        default=None, description="Commit author. Default: projectgen <projectgen@users.noreply.local>."
    )
    if_exists: IfExists = Field(
        default=IfExists.FAIL,
        alias="ifExists",
        description="Fail (default): fail when the repository exists and this export did not create it. "
        "Adopt: push into an existing repository when it is empty. PullRequest: deliver into an existing "
        "repository, even the first render, as a pull / merge request (an empty one gets a first commit).",
    )
    path: RelativePath | None = Field(
        default=None,
        description="Deliver the project under this directory of the repository (a monorepo); the rest "
        "of the repository is never touched. Relative, '/'-separated, no '.' or '..' segments, no control "
        "characters. Default: the repository's root.",
    )
    pull_request: RequestPeople | None = Field(
        default=None,
        alias="pullRequest",
        description="Reviewers, assignees and labels of the requests updates arrive in. Optional; what "
        "the forge refuses (an unknown user, no permission) is a Warning Event, never a failure.",
    )


class UpdateSpec(Model):
    """How deliveries after the first reach the repository (day two)."""

    strategy: UpdateStrategy = Field(
        default=UpdateStrategy.PULL_REQUEST,
        description="PullRequest (default): the three-way merge of the new render with the branch is "
        "committed on the export's own branch projectgen/<export name>, for a pull / merge request. "
        "Push: the merge goes on top of the branch, but only while the branch head is still this "
        "export's last commit and nothing conflicts; otherwise it falls back to PullRequest and says why.",
    )


class RepositoryExportSpec(Model):
    """What to export, and where to."""

    generated_project_ref: LocalObjectReference = Field(
        alias="generatedProjectRef",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "generatedProjectRef is immutable"}
            ]
        },
        description="The GeneratedProject to export, in the same namespace. Immutable.",
    )
    export_type: ExportType = Field(
        alias="exportType", description="zip, tar, tar.gz, github, gitlab or gitea."
    )
    repository_name: str | None = Field(
        default=None,
        alias="repositoryName",
        min_length=1,
        max_length=100,
        pattern=REPOSITORY_NAME_PATTERN,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self != '.' && self != '..'", "message": "must not be '.' or '..'"}
            ]
        },
        description="Name of the repository to create (checked against the forge's own rules: GitLab "
        "paths start and end with a letter or digit and have no two special characters in a row), and "
        "of the archive's top-level folder. Default for archives: the GeneratedProject's name.",
    )
    compression_level: int | None = Field(
        default=None,
        alias="compressionLevel",
        ge=0,
        le=9,
        description="zip / tar.gz compression level (default 6). Lower is faster and larger.",
    )
    config: PublishConfig | None = Field(default=None, description="GitHub / GitLab / Gitea settings.")
    update: UpdateSpec | None = Field(
        default=None,
        description="GitHub / GitLab / Gitea: how a later render reaches a repository a team works in. "
        "It never overwrites the team's work: it is merged with it.",
    )

    @model_validator(mode="after")
    def _publish_needs_config(self) -> RepositoryExportSpec:
        if self.export_type in ARCHIVE_TYPES:
            return self
        forge = str(self.export_type)
        if self.config is None:
            raise ValueError(f"exportType {forge} needs config.credentialsSecretRef")
        if self.repository_name is None:
            raise ValueError(f"exportType {forge} needs repositoryName")
        if forge == "gitea" and self.config.api_url is None:
            raise ValueError(GITEA_NEEDS_API_URL)
        problem = publish_problem(forge, self.repository_name, self.config)
        if problem:
            raise ValueError(problem)
        return self


def _visibility_problem(forge: str, visibility: str, owner: str | None, api_url: str | None) -> str | None:
    if visibility not in VISIBILITIES[forge]:
        return (
            f"{_FORGE[forge]} repositories are {' or '.join(VISIBILITIES[forge])}: there is no {visibility}"
        )
    if forge == "github" and visibility == "internal" and owner is None:
        return GITHUB_INTERNAL_NEEDS_OWNER
    if forge == "gitlab" and visibility == "internal" and is_gitlab_com(api_url):
        return GITLAB_COM_NO_INTERNAL
    return None


def publish_problem(forge: str, name: str, config: PublishConfig) -> str | None:
    """What the forge would refuse about this spec, as the CRD's CEL rules say it; None: nothing."""
    problem = NAME_RULES[forge].check(name)
    if problem:
        return problem
    if forge != "github" and config.github_app is not None:
        return GITHUB_APP_ONLY_GITHUB
    if forge in ("github", "gitea") and config.owner and "/" in config.owner:
        return f"config.owner {config.owner!r}: {_FORGE[forge]} owners are one user or organisation, no '/'"
    return _visibility_problem(forge, str(config.visibility), config.owner, config.api_url)


_FORGE = {"github": "GitHub", "gitlab": "GitLab", "gitea": "Gitea"}
GITHUB_INTERNAL_NEEDS_OWNER = (
    "visibility internal needs config.owner: an organisation that belongs to an enterprise "
    "(GitHub Enterprise Cloud or Server); a user's repositories are private or public"
)
GITHUB_APP_ONLY_GITHUB = "config.githubApp is for exportType github: GitLab and Gitea take a token"
GITEA_NEEDS_API_URL = "exportType gitea needs config.apiUrl: the Gitea server's URL (https://HOST)"
GITLAB_COM_NO_INTERNAL = (
    "gitlab.com does not allow visibility internal for new projects: use private or public, or set "
    "config.apiUrl to a self-managed GitLab"
)


def _cel_rules() -> list[JsonValue]:
    rules: list[JsonValue] = [
        {
            "rule": f"self.exportType in {_CEL_ARCHIVE_TYPES} || has(self.config)",
            "message": "exportType github, gitlab and gitea need config.credentialsSecretRef",
            "fieldPath": ".config",
        },
        {
            "rule": f"self.exportType in {_CEL_ARCHIVE_TYPES} || has(self.repositoryName)",
            "message": "exportType github, gitlab and gitea need repositoryName",
            "fieldPath": ".repositoryName",
        },
    ]
    for forge, rule in NAME_RULES.items():
        rules.append(
            {
                "rule": f"self.exportType != '{forge}' || !has(self.repositoryName) || "
                f"({rule.cel('self.repositoryName')})",
                "message": f"not a valid {rule.forge} repository name: {rule.message}",
                "fieldPath": ".repositoryName",
            }
        )
    has_visibility = "has(self.config) && has(self.config.visibility)"
    rules += [
        {
            "rule": "self.exportType != 'gitea' || (has(self.config) && has(self.config.apiUrl))",
            "message": GITEA_NEEDS_API_URL,
            "fieldPath": ".config.apiUrl",
        },
        {
            "rule": f"self.exportType != 'gitea' || !({has_visibility} && self.config.visibility == 'internal')",
            "message": "Gitea repositories are private or public: there is no internal",
            "fieldPath": ".config.visibility",
        },
        {
            "rule": f"self.exportType != 'github' || !({has_visibility} && self.config.visibility == 'internal') "
            "|| has(self.config.owner)",
            "message": GITHUB_INTERNAL_NEEDS_OWNER,
            "fieldPath": ".config.visibility",
        },
        {
            "rule": f"self.exportType != 'gitlab' || !({has_visibility} && self.config.visibility == 'internal') "
            "|| (has(self.config.apiUrl) && !self.config.apiUrl.lowerAscii()"
            ".matches('^[a-z]+://(www[.])?gitlab[.]com([:/]|$)'))",
            "message": GITLAB_COM_NO_INTERNAL,
            "fieldPath": ".config.visibility",
        },
        {
            "rule": "self.exportType == 'github' || !has(self.config) || !has(self.config.githubApp)",
            "message": GITHUB_APP_ONLY_GITHUB,
            "fieldPath": ".config.githubApp",
        },
        {
            "rule": "!(self.exportType in ['github', 'gitea']) || !has(self.config) || !has(self.config.owner) "
            "|| !self.config.owner.contains('/')",
            "message": "GitHub and Gitea owners are one user or organisation, no '/'",
            "fieldPath": ".config.owner",
        },
    ]
    return rules


RepositoryExportSpec.model_config["json_schema_extra"] = {"x-kubernetes-validations": _cel_rules()}


class RepositoryExportPhase(StrEnum):
    PENDING = "Pending"
    EXPORTING = "Exporting"
    COMPLETED = "Completed"
    FAILED = "Failed"


class PullRequestStatus(Model):
    """The export's pull / merge request: one per export, found again by its branch."""

    url: str | None = Field(
        default=None,
        max_length=2048,
        json_schema_extra={"format": "uri", "x-kubernetes-validations": [URL_RULE]},
        description="Web URL of the request.",
    )
    number: int | None = Field(default=None, ge=0, description="The request's number (GitLab: iid).")
    state: RequestState | None = Field(default=None, description="open, merged or closed.")
    head_sha: str | None = Field(
        default=None,
        alias="headSha",
        pattern=r"^[a-f0-9]{40}([a-f0-9]{24})?$",
        max_length=64,
        description="The commit on the export's branch the request shows.",
    )
    conflicted_files: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None,
        alias="conflictedFiles",
        max_length=100,
        description="Files a person must resolve (the first 100): markers, or a version kept as the team's.",
    )
    opened_at: datetime | None = Field(
        default=None,
        alias="openedAt",
        description="When the operator first saw this request open (the age metrics and alerts count from it).",
    )
    conflicted_since: datetime | None = Field(
        default=None,
        alias="conflictedSince",
        description="Since when this request has had conflicts a person must resolve; unset without conflicts.",
    )


class RepositoryExportStatus(Model):
    """What was exported, and how it went."""

    phase: RepositoryExportPhase | None = Field(
        default=None, description="Pending, Exporting, Completed or Failed."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, alias="observedGeneration", description="The metadata.generation last acted on."
    )
    conditions: Conditions | None = Field(
        default=None, description="kstatus conditions: Ready, Reconciling, Stalled."
    )
    archive_path: str | None = Field(
        default=None,
        alias="archivePath",
        max_length=4096,
        description="Path of the archive in the operator's volume.",
    )
    archive_size: int | None = Field(
        default=None, ge=0, alias="archiveSize", description="Archive size in bytes."
    )
    archive_sha256: Sha256 | None = Field(
        default=None, alias="archiveSha256", description="SHA-256 of the archive."
    )
    download_path: str | None = Field(
        default=None,
        alias="downloadPath",
        max_length=1024,
        description="Where to download the archive through the API server, with your own credentials: "
        "`kubectl get --raw <downloadPath> > FILE`, or `projectgen download rexp/NAME`.",
    )
    repository: str | None = Field(
        default=None,
        max_length=512,
        description="owner/name of the repository this export created or adopted. Recorded before the "
        "repository is created, so a restart never creates a second one.",
    )
    repository_url: str | None = Field(
        default=None,
        alias="repositoryUrl",
        max_length=2048,
        json_schema_extra={"format": "uri", "x-kubernetes-validations": [URL_RULE]},
        description="Web URL of the created repository.",
    )
    commit_sha: str | None = Field(
        default=None,
        alias="commitSha",
        pattern=r"^[a-f0-9]{40}([a-f0-9]{24})?$",
        max_length=64,
        description="The pushed commit.",
    )
    exported_content_hash: Sha256 | None = Field(
        default=None,
        alias="exportedContentHash",
        description="The GeneratedProject contentHash that was exported.",
    )
    delivered_content_hash: Sha256 | None = Field(
        default=None,
        alias="deliveredContentHash",
        description="The GeneratedProject contentHash the target branch holds from this export (pushed, "
        "or merged through its request). Differs from exportedContentHash while a request is open.",
    )
    pull_request: PullRequestStatus | None = Field(
        default=None,
        alias="pullRequest",
        description="The export's pull / merge request for the latest render, when an update needs one.",
    )
    error_message: Message | None = Field(
        default=None, alias="errorMessage", description="Why the export failed."
    )
    created_by: CreatedBy | None = Field(default=None, alias="createdBy")
    last_handled_configuration: HandledConfiguration | None = Field(default=None, alias=HANDLED_FIELD)
    completed_at: datetime | None = Field(
        default=None, alias="completedAt", description="When the export completed."
    )


RepositoryExportStatus.model_config["json_schema_extra"] = {
    "x-kubernetes-validations": [
        {
            "rule": "!has(self.archiveSize) || has(self.archivePath)",
            "message": "archiveSize needs archivePath",
        }
    ]
}


class RepositoryExport(Model):
    """The whole object, as handed to the operator."""

    model_config = Model.model_config | {"extra": "ignore"}

    spec: RepositoryExportSpec
    status: RepositoryExportStatus | None = None
