"""What each forge accepts as a repository name and visibility, as each one documents it.

One table serves three places: the CRD (CEL rules, so `kubectl apply` refuses at once), the
model (the operator parses every object with it) and the publishers (checked again before any
request, for callers that build a PublishRequest themselves). Plain data, no dependencies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GITLAB_COM_HOSTS = ("gitlab.com", "www.gitlab.com")


@dataclass(frozen=True)
class NameRule:
    forge: str
    pattern: str
    """A regular expression valid both in Python and in CEL's RE2 `matches()`."""
    forbidden_suffixes: tuple[str, ...]
    """Compared case-insensitively."""
    reserved: tuple[str, ...]
    forbidden_substrings: tuple[str, ...]
    message: str
    docs: str

    def check(self, name: str) -> str | None:
        """None when `name` is acceptable, else what is wrong with it."""
        lowered = name.lower()
        if (
            not re.fullmatch(self.pattern, name)
            or lowered in self.reserved
            or lowered.endswith(self.forbidden_suffixes)
            or any(part in name for part in self.forbidden_substrings)
        ):
            return f"repositoryName {name!r} is not a valid {self.forge} name: {self.message}"
        return None

    def cel(self, field: str) -> str:
        parts = [f"{field}.matches('{self.pattern}')"]
        parts += [f"!{field}.lowerAscii().endsWith('{suffix}')" for suffix in self.forbidden_suffixes]
        parts += [f"!{field}.contains('{part}')" for part in self.forbidden_substrings]
        if self.reserved:
            parts.append(f"!({field}.lowerAscii() in {list(self.reserved)!r})")
        return " && ".join(parts)


NAME_RULES: dict[str, NameRule] = {
    # https://docs.github.com/repositories/creating-and-managing-repositories/creating-a-new-repository
    # ("can only contain ASCII letters, digits, and the characters ., -, and _"), at most 100.
    "github": NameRule(
        "GitHub",
        r"^[A-Za-z0-9_.-]+$",
        (),
        (".", ".."),
        (),
        "only ASCII letters, digits, '.', '-' and '_', and not '.' or '..'",
        "https://docs.github.com/repositories/creating-and-managing-repositories/creating-a-new-repository",
    ),
    # https://docs.gitlab.com/user/reserved_names/#rules-for-usernames-project-and-group-names-and-slugs:
    # a slug starts and ends with a letter or digit, has no consecutive special characters,
    # does not end in .git or .atom, and holds only letters, digits, '_', '.' and '-'.
    # (gitlab-org/gitlab!80055: `[a-z0-9]+([._-][a-z0-9]+)*`, case-insensitive.)
    "gitlab": NameRule(
        "GitLab",
        r"^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$",
        (".git", ".atom"),
        (),
        (),
        "it must start and end with a letter or digit, contain only letters, digits, '_', '.' and '-', "
        "never two of '_', '.', '-' in a row, and not end in .git or .atom",
        "https://docs.gitlab.com/user/reserved_names/",
    ),
    # Gitea models/repo/repo.go IsUsableRepoName: `^[-.\w]+$`, no `..`, not `.`, `..` or `-`,
    # not ending in .wiki, .git, .rss or .atom (case-insensitive); structs.CreateRepoOption: MaxSize(100).
    "gitea": NameRule(
        "Gitea",
        r"^[A-Za-z0-9_.-]+$",
        (".wiki", ".git", ".rss", ".atom"),
        (".", "..", "-"),
        ("..",),
        "only ASCII letters, digits, '.', '-' and '_', never '..', not '.', '..' or '-', and not ending "
        "in .wiki, .git, .rss or .atom",
        "https://github.com/go-gitea/gitea/blob/v1.26.0/models/repo/repo.go",
    ),
}

VISIBILITIES: dict[str, tuple[str, ...]] = {
    # POST /orgs/{org}/repos enumerates public and private on github.com; internal exists only for
    # organisations that belong to an enterprise (GitHub Enterprise Cloud, and every org on GHES).
    "github": ("private", "internal", "public"),
    # https://docs.gitlab.com/user/public_access/: internal is disabled for new projects on gitlab.com.
    "gitlab": ("private", "internal", "public"),
    # Gitea's CreateRepoOption has a `private` flag only.
    "gitea": ("private", "public"),
}

VISIBILITY_RANK = {"private": 0, "internal": 1, "public": 2}


def is_gitlab_com(api_url: str | None) -> bool:
    """True for gitlab.com, the default when no apiUrl is set."""
    if not api_url:
        return True
    host = re.sub(r"^[a-z]+://", "", api_url.lower()).split("/")[0].split(":")[0]
    return host in GITLAB_COM_HOSTS
