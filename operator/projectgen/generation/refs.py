"""What a template `ref` means, decided over a repository's ref listing. Pure: no git, no network.

The same listing comes from two places: `git show-ref --dereference` in a fresh clone (the render)
and `git ls-remote` on the remote (the update check); both print `<sha> <refname>` lines, with
`<tag>^{}` lines for the commits annotated tags point to. So the render and the check can never
disagree about what a ref resolves to.

- A PEP 440 specifier set (`>=1.2,<2`, `~=1.2`, `==1.*`) follows: it resolves to the newest tag
  whose name is a version matching it, as copier picks its default tag (packaging's `Version`,
  pre-releases only when the specifier names one). The resolution moves when a new tag matches.
- No ref: copier's default, the newest tag that is a final release, else the default branch; it
  follows too.
- A branch name follows the branch's head.
- A tag name or a commit SHA is pinned: it never moves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from projectgen.api.v1alpha1.generatedproject import RefKind

_OPERATOR = re.compile(r"^\s*(~=|===?|!=|<=|>=|<|>)")
_SHA = re.compile(r"^[0-9a-f]{7,40}$")


class RefError(ValueError):
    """The ref resolves to nothing in this listing (or is not a valid constraint)."""


@dataclass(frozen=True)
class Refs:
    """A repository's refs: tag and branch names to the commits they point to."""

    tags: dict[str, str] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    head: str | None = None
    """The commit of HEAD (the default branch), when listed."""


@dataclass(frozen=True)
class Resolution:
    kind: RefKind
    commit: str
    tag: str | None = None
    """The tag the commit was chosen by (constraint, latest, tag), else None."""
    target: str = ""
    """What git checks out: the tag, the branch or the commit."""

    @property
    def label(self) -> str:
        """The tag, else the short commit: what a person reads in an Event."""
        return self.tag or self.commit[:12]


def parse_listing(lines: Iterable[str], *, remote_prefix: str = "refs/heads/") -> Refs:
    """`<sha> <ref>` lines (ls-remote, or show-ref with `remote_prefix="refs/remotes/origin/"`)."""
    tags: dict[str, str] = {}
    peeled: dict[str, str] = {}
    branches: dict[str, str] = {}
    head = None
    for line in lines:
        sha, _, name = line.strip().partition(" " if " " in line.strip() else "\t")
        name = name.strip()
        if not sha or not name:
            continue
        if name == "HEAD" or name == remote_prefix + "HEAD":
            head = sha
        elif name.startswith("refs/tags/"):
            tag = name[len("refs/tags/") :]
            if tag.endswith("^{}"):
                peeled[tag[:-3]] = sha
            else:
                tags.setdefault(tag, sha)
        elif name.startswith(remote_prefix):
            branches[name[len(remote_prefix) :]] = sha
    tags.update({t: sha for t, sha in peeled.items() if t in tags})
    return Refs(tags=tags, branches=branches, head=head)


def constraint(ref: str | None) -> SpecifierSet | None:
    """The specifier set a ref spells, or None when it is a plain git ref. Raises RefError for a
    ref that starts like a constraint but is not a valid one."""
    if ref is None or not _OPERATOR.match(ref):
        return None
    try:
        return SpecifierSet(ref)
    except InvalidSpecifier:
        raise RefError(
            f"ref {ref!r} is not a valid PEP 440 version constraint (examples: '>=1.2,<2', '~=1.2', '==1.*')"
        ) from None


def _versions(tags: dict[str, str]) -> list[tuple[Version, str]]:
    out = []
    for tag in tags:
        try:
            out.append((Version(tag), tag))
        except InvalidVersion:
            continue
    return out


def newest_matching(specifiers: SpecifierSet | None, tags: dict[str, str]) -> str | None:
    """The newest tag matching `specifiers` (None: the newest final release), as copier picks."""
    candidates = []
    for version, tag in _versions(tags):
        if specifiers is None:
            if not version.is_prerelease:
                candidates.append((version, tag))
        elif specifiers.contains(version, prereleases=_names_prerelease(specifiers)):
            candidates.append((version, tag))
    return max(candidates)[1] if candidates else None


def _names_prerelease(specifiers: SpecifierSet) -> bool:
    return any(Version(s.version.rstrip(".*")).is_prerelease for s in specifiers if _parses(s.version))


def _parses(text: str) -> bool:
    try:
        Version(text.rstrip(".*"))
    except InvalidVersion:
        return False
    return True


def resolve(ref: str | None, refs: Refs) -> Resolution:
    """The commit `ref` means in `refs`. Raises RefError naming what is missing."""
    specifiers = constraint(ref)
    if ref is None or specifiers is not None:
        tag = newest_matching(specifiers, refs.tags)
        if tag is not None:
            kind = RefKind.LATEST if ref is None else RefKind.CONSTRAINT
            return Resolution(kind, refs.tags[tag], tag=tag, target=tag)
        if ref is not None:
            listed = [t for _, t in sorted(_versions(refs.tags))][-5:]
            seen = f" (newest version tags: {', '.join(listed)})" if listed else " (it has no version tags)"
            raise RefError(f"no tag of the template repository matches {ref!r}{seen}")
        if refs.head is None:
            raise RefError("the template repository has no version tag and no default branch")
        return Resolution(RefKind.LATEST, refs.head, target="HEAD")
    if ref in refs.tags:
        return Resolution(RefKind.TAG, refs.tags[ref], tag=ref, target=ref)
    if ref in refs.branches:
        return Resolution(RefKind.BRANCH, refs.branches[ref], target=ref)
    if _SHA.match(ref):
        return Resolution(RefKind.COMMIT, ref, target=ref)  # checked by the checkout, not here
    raise RefError(f"ref {ref!r} is neither a tag, a branch nor a commit of the template repository")
