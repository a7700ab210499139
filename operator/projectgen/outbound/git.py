"""git configuration that makes git connect only where the policy allowed.

- `http.curloptResolve` pins the checked host:port to the addresses that were checked: git (curl)
  does not resolve the name again, so a name that changes its answer between the check and the
  connection gets nowhere new.
- `http.followRedirects=false`: git would follow a redirect to a host nobody checked; it is refused.
- No proxy: through a proxy the proxy resolves the name again (DNS rebinding reaches internal
  addresses) and `http.curloptResolve` is not used. `http.proxy=` (empty) makes curl ignore the
  proxy variables, and `without_proxies` removes them from git's environment as well, so the clone,
  the push and the forge API calls (`http.py`) follow the same rule: the checked address, directly.
- Submodules: their URLs are known only after the clone. Only those on the template's own origin
  (scheme, host and port, so the same pinned address) are fetched; every other http(s) URL is
  rewritten (`url.<base>.insteadOf`, longest match wins) to a transport git refuses, before any
  connection is made.

The settings go in `GIT_CONFIG_COUNT` environment configuration, which every git child process
(submodule clones included) inherits and which argv-based tools cannot override.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from projectgen.outbound.policy import Checked, Guard, Kind

REFUSED_TRANSPORT = "projectgen-refused"
"""The scheme other-origin submodule URLs are rewritten to; git refuses it (not in GIT_ALLOW_PROTOCOL)."""


PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy", "no_proxy"})
"""Compared in lower case: curl reads the lower- and upper-case forms, Python's urllib any case."""


def without_proxies(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without any proxy variable, whatever its letter case."""
    return {name: value for name, value in env.items() if name.lower() not in PROXY_VARIABLES}


def _resolve_entry(checked: Checked) -> str:
    addresses = ",".join(f"[{a}]" if a.version == 6 else str(a) for a in checked.addresses)
    return f"{checked.host}:{checked.port}:{addresses}"


def git_config(guard: Guard, kind: Kind, url: str, *, submodules: bool = False) -> list[tuple[str, str]]:
    """Check `url` (raises Refused) and return the git config pairs that pin it."""
    checked = guard.check(kind, url.removeprefix("git+"))
    config = [
        ("http.curloptResolve", _resolve_entry(checked)),
        ("http.followRedirects", "false"),
        ("http.proxy", ""),
    ]
    if submodules:
        parts = urlsplit(url.removeprefix("git+"))
        origins = {
            f"{parts.scheme}://{parts.netloc}/",
            f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/",
        }
        for scheme in ("https://", "http://"):
            config.append((f"url.{REFUSED_TRANSPORT}://.insteadOf", scheme))
        for origin in sorted(origins):
            config.append((f"url.{origin}.insteadOf", origin))
    return config


def config_env(config: list[tuple[str, str]]) -> dict[str, str]:
    """`GIT_CONFIG_COUNT` environment for `config`."""
    env = {"GIT_CONFIG_COUNT": str(len(config))}
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env
