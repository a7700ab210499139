"""Publish a rendered tree as a new GitHub, GitLab or Gitea repository: the host-neutral flow.

One call creates (or finds) the repository and pushes the tree as one commit. The flow is
safe to repeat: `claim()` persists the repository's name before it is created, so a run
that restarts between create and push recognises the repository as its own instead of
creating a second one or failing with "already exists".

Every message that leaves this package (exception text, log records) is built without
the token and redacted once more on the way out: it is meant to go into `status`.

The forges (`github`, `gitlab`, `gitea`) and `gitpush` import only `model`, `http` and `redaction`;
this module imports them and picks a forge from `HOSTS`.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import tenacity

from projectgen import outbound
from projectgen.api.v1alpha1.forges import NAME_RULES
from projectgen.api.v1alpha1.repositoryexport import ExportType, IfExists
from projectgen.export.publish import gitpush, gitupdate
from projectgen.export.publish.gitea import GiteaHost
from projectgen.export.publish.github import GitHubHost
from projectgen.export.publish.gitlab import GitLabHost
from projectgen.export.publish.model import (
    HostAdapter,
    PublishError,
    PublishRequest,
    PublishResult,
    PublishSettings,
    PullRequestHost,
    RemoteRepository,
)
from projectgen.export.publish.redaction import private_key_forms, redact, secret_forms
from projectgen.export.update.delivery import Action, ExportRefs
from projectgen.export.update.record import PullRequest, RequestState, Step, describe, plan
from projectgen.generation.manifest import content_hash

log = logging.getLogger(__name__)

_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")

HOSTS: dict[ExportType, Callable[[PublishRequest, PublishSettings], HostAdapter]] = {
    ExportType.GITHUB: GitHubHost,
    ExportType.GITLAB: GitLabHost,
    ExportType.GITEA: GiteaHost,
}
"""The forge behind each export type: a new forge is one module and one line here."""


def _redacted(exc: PublishError, secrets: Sequence[str]) -> PublishError:
    return PublishError(redact(exc.message, secrets), permanent=exc.permanent, retry_after=exc.retry_after)


def _same_repo(a: str | None, b: str) -> bool:
    # GitHub, GitLab and Gitea all resolve owner/name case-insensitively.
    return a is not None and a.casefold() == b.casefold()


def _check_request(req: PublishRequest) -> None:
    if req.github_app is not None:
        if req.host != ExportType.GITHUB:
            raise PublishError(f"GitHub App credentials are for GitHub, not {req.host}", permanent=True)
    elif not req.token:
        raise PublishError(
            "the token is empty: check the Secret named in config.credentialsSecretRef", permanent=True
        )
    elif not _TOKEN_RE.fullmatch(req.token):
        raise PublishError(
            "the token contains whitespace or control characters: store it in the Secret without a trailing newline",
            permanent=True,
        )
    rule = NAME_RULES.get(req.host)
    problem = rule.check(req.name) if rule else f"unknown host {req.host!r}"
    if problem:
        # The CRD refuses these at apply; this is for callers that build a request themselves.
        raise PublishError(problem, permanent=True)
    if content_hash(req.files) != req.content_hash:
        raise PublishError(
            "the file list does not match the project's contentHash: the manifest is damaged; regenerate the project",
            permanent=True,
        )


def _make_host(req: PublishRequest, settings: PublishSettings) -> HostAdapter:
    make = HOSTS.get(req.host)
    if make is None:
        raise PublishError(f"unknown host {str(req.host)!r}", permanent=True)
    return make(req, settings)


@dataclass
class _Progress:
    """What earlier attempts of this call did: a retry must not claim or create twice."""

    claimed: str | None
    create_attempted: bool = False
    created: bool = False


def _retryable(exc: BaseException, settings: PublishSettings) -> bool:
    if not isinstance(exc, PublishError) or exc.permanent:
        return False
    return exc.retry_after is None or exc.retry_after <= settings.backoff_cap


def _wait(settings: PublishSettings) -> Callable[[tenacity.RetryCallState], float]:
    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, PublishError) and exc.retry_after is not None:
            return max(0.0, exc.retry_after)
        return min(settings.backoff_cap, settings.backoff_base * 2 ** (state.attempt_number - 1))

    return wait


def _log_retry(
    secrets: Callable[[], Sequence[str]], on_retry: Callable[[], None] | None
) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        sleep = state.next_action.sleep if state.next_action else 0.0
        message = redact(str(exc), secrets())
        log.info("publish attempt %d failed, retrying in %.1fs: %s", state.attempt_number, sleep, message)
        if on_retry is not None:
            on_retry()

    return before_sleep


@contextmanager
def _workdir(settings: PublishSettings, on_workdir: Callable[[Path], None] | None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="projectgen-publish-", dir=settings.work_root))
    try:
        yield path
    finally:
        try:
            if on_workdir is not None:
                on_workdir(path)
        finally:
            shutil.rmtree(path, ignore_errors=True)


def _secrets_of(req: PublishRequest) -> list[str]:
    secrets = secret_forms(req.token) if req.token else []
    if req.github_app is not None:
        secrets += private_key_forms(req.github_app.private_key)
    return secrets


def read_request(
    req: PublishRequest, full_name: str, number: int, *, settings: PublishSettings | None = None
) -> PullRequest:
    """The state of request `number` of `full_name`, in one GET (no retries: the poll's next tick
    is the retry). `req` needs only the forge, its URL, the credentials and the outbound guard."""
    settings = settings or PublishSettings()
    secrets = _secrets_of(req)
    host: HostAdapter | None = None
    try:
        host = _make_host(req, settings)
        try:
            if not isinstance(host, PullRequestHost):
                raise PublishError(f"{req.host} has no pull requests here", permanent=True)
            return host.read_request(full_name, number)
        finally:
            host.close()
    except PublishError as exc:
        raise _redacted(exc, [*(host.secrets() if host else ()), *secrets]) from None
    except outbound.Refused as exc:
        raise PublishError(redact(exc.message, secrets), permanent=True) from None


def publish(
    req: PublishRequest,
    *,
    claim: Callable[[str], None],
    settings: PublishSettings | None = None,
    on_workdir: Callable[[Path], None] | None = None,
    on_retry: Callable[[], None] | None = None,
) -> PublishResult:
    """Create (or find) the repository and push the tree as one commit on `req.default_branch`.

    `claim(full_name)` is called before the repository is created (or adopted) and must
    persist it (status.repository); it is passed back as `req.claimed` on the next run.
    An exception from `claim` propagates unchanged and nothing is created.
    Raises PublishError; temporary ones were already retried a few times here.
    `on_workdir` sees the temporary git directory just before it is removed (tests).
    `on_retry()` is called before each retry of a temporary failure inside this call (metrics).
    """
    settings = settings or PublishSettings()
    secrets = _secrets_of(req)
    host: HostAdapter | None = None

    def all_secrets() -> list[str]:
        # Tokens the host minted during the call (GitHub App installation tokens) count too.
        return [*(host.secrets() if host is not None else ()), *secrets]

    try:
        _check_request(req)
        host = _make_host(req, settings)
        try:
            with _workdir(settings, on_workdir) as workdir:
                progress = _Progress(claimed=req.claimed)
                retrying = tenacity.Retrying(
                    retry=tenacity.retry_if_exception(lambda e: _retryable(e, settings)),
                    stop=tenacity.stop_after_attempt(settings.attempts)
                    | tenacity.stop_after_delay(settings.deadline),
                    wait=_wait(settings),
                    before_sleep=_log_retry(all_secrets, on_retry),
                    reraise=True,
                )
                result: PublishResult = retrying(_attempt, req, host, progress, claim, settings, workdir)
                return result
        finally:
            host.close()
    except PublishError as exc:
        raise _redacted(exc, all_secrets()) from None
    except outbound.Refused as exc:
        raise PublishError(redact(exc.message, all_secrets()), permanent=True) from None


def _attempt(
    req: PublishRequest,
    host: HostAdapter,
    progress: _Progress,
    claim: Callable[[str], None],
    settings: PublishSettings,
    workdir: Path,
) -> PublishResult:
    owner = host.resolve_owner(req.owner)
    full_name = f"{owner.path}/{req.name}"
    repo = host.find(full_name)
    if repo is None:
        host.check_visibility(owner, req)
        if not _same_repo(progress.claimed, full_name):
            claim(full_name)
            progress.claimed = full_name
        log.info("creating repository %s", full_name)
        progress.create_attempted = True
        repo = host.create(owner, req)
        progress.created = True
    elif _same_repo(progress.claimed, repo.full_name):
        # An earlier attempt of this call may have created it and lost the response.
        progress.created = progress.created or progress.create_attempted
        log.info("repository %s exists and belongs to this export", repo.full_name)
    elif req.if_exists == IfExists.ADOPT:
        heads = gitpush.list_heads(
            repo.clone_url,
            gitpush.Credentials(host.git_username, host.git_password()),
            workdir=workdir,
            timeout=settings.git_timeout,
            guard=req.guard,
        )
        if heads:
            raise PublishError(
                f"repository {repo.full_name} exists and is not empty; Adopt only pushes into an empty repository",
                permanent=True,
            )
        claim(repo.full_name)
        progress.claimed = repo.full_name
        log.info("adopting empty repository %s", repo.full_name)
    elif req.if_exists == IfExists.PULL_REQUEST:
        # Someone else's repository: even the first render arrives as a request (deliver: there
        # is no commit of this export on the branch), unless the repository is empty.
        claim(repo.full_name)
        progress.claimed = repo.full_name
        log.info("delivering into existing repository %s by pull request", repo.full_name)
    else:
        raise PublishError(
            f"repository {repo.full_name} already exists and was not created by this export; set "
            "config.ifExists: Adopt to push into an empty one, PullRequest to deliver by pull request, "
            "or choose another repositoryName",
            permanent=True,
        )

    refs = ExportRefs.of(req.export_name or req.name)
    requests_host = host if isinstance(host, PullRequestHost) else None
    # A repository this call created has no requests yet: no lookup.
    latest = requests_host.find_request(repo, refs.branch) if requests_host and not progress.created else None
    merged_hash = req.merged_content_hash
    if merged_hash is None and latest is not None and latest.state == RequestState.MERGED:
        merged_hash = latest.content_hash
    outcome = gitupdate.deliver(
        url=repo.clone_url,
        # Asked for right before the push: an installation token is renewed here when it would
        # lapse during the push (a publish can outlive one when it waits for rate limits).
        credentials=gitpush.Credentials(host.git_username, host.git_password()),
        branch=req.default_branch,
        refs=refs,
        tree=req.tree,
        files=req.files,
        message=req.commit_message,
        author_name=req.author_name,
        author_email=req.author_email,
        content_hash=req.content_hash,
        strategy=req.update_strategy,
        delivered=req.delivered_commit,
        merged_hash=merged_hash,
        team_owned=req.team_owned,
        path=req.path,
        templates=req.templates,
        workdir=workdir,
        timeout=settings.git_timeout,
        guard=req.guard,
    )
    warnings: list[str] = []
    if outcome.remote_was_empty:
        warnings.extend(host.after_first_push(repo, req))
    log.info(
        "%s branch %s: %s%s at %s",
        repo.full_name,
        req.default_branch,
        outcome.action,
        "" if outcome.pushed else " (nothing new to push)",
        outcome.request_head or outcome.commit_sha,
    )
    merge = outcome.merge
    landed = outcome.action in (Action.FIRST, Action.PUSH)
    request = latest
    if requests_host is not None:
        request = _carry_out_request(requests_host, repo, req, refs.branch, outcome, latest, warnings)
    elif outcome.action == Action.PULL_REQUEST:
        warnings.append(
            f"{req.host} pull requests are not opened yet: the update waits on branch {refs.branch}; "
            f"open a request from it into {req.default_branch}"
        )
    delivered_hash = (
        req.content_hash
        if landed or outcome.action == Action.NOTHING
        else merged_hash
        if outcome.base_moved
        else None
    )
    return PublishResult(
        repository=repo.full_name,
        repository_url=repo.web_url,
        # The branch head counts as delivered only when this export put it there: the Push
        # compare-and-swap of the next update holds against it.
        commit_sha=(
            outcome.commit_sha
            if landed or outcome.head_is_ours
            else req.delivered_commit or outcome.commit_sha
        ),
        created=progress.created,
        pushed=outcome.pushed and landed,
        warnings=warnings,
        action=str(outcome.action),
        reason=outcome.reason,
        request_branch=refs.branch if outcome.action == Action.PULL_REQUEST else None,
        request_head=outcome.request_head,
        conflicts=[f"{c.path} ({c.kind})" for c in merge.conflicts] if merge else [],
        pull_request=request,
        delivered_content_hash=delivered_hash,
    )


def _carry_out_request(
    host: PullRequestHost,
    repo: RemoteRepository,
    req: PublishRequest,
    branch: str,
    outcome: gitupdate.UpdateOutcome,
    latest: PullRequest | None,
    warnings: list[str],
) -> PullRequest | None:
    """One request per export: open it, update it, or close it when nothing is left to merge."""
    merge = outcome.merge
    what = plan(action=outcome.action, latest=latest, content_hash=req.content_hash)
    if what.step == Step.CLOSE and latest is not None:
        log.info("closing pull request #%d of %s: %s", latest.number, repo.full_name, what.note)
        return host.close_request(repo, latest, what.note)
    if what.step in (Step.NONE, Step.CLOSE) or merge is None:
        return latest
    text = describe(
        export=req.export_name or req.name,
        branch=req.default_branch,
        content_hash=req.content_hash,
        previous_hash=req.delivered_content_hash,
        merge=merge,
        namespace=req.export_namespace,
        created_by=req.created_by,
        labels=req.request_labels,
        reviewers=req.request_reviewers,
        assignees=req.request_assignees,
        templates_from=outcome.base_templates,
        templates_to=req.templates,
    )
    if what.step == Step.UPDATE and latest is not None:
        request, more = host.edit_request(repo, latest, text)
        log.info("updated pull request #%d of %s", request.number, repo.full_name)
    else:
        request, more = host.open_request(repo, branch, req.default_branch, text)
        log.info("opened pull request #%d of %s", request.number, repo.full_name)
    warnings.extend(more)
    return request
