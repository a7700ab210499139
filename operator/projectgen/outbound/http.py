"""HTTP to forges (PyGithub, python-gitlab) through the policy: checked, pinned, size-capped.

`CheckedAdapter` is a requests transport adapter. For every request it checks the URL against the
policy; for every new connection it resolves the host, checks every address and connects to a
checked one (the name is not resolved again by anyone), TLS still verified against the host name.
A redirect is a new request through the same adapter, so it is checked the same way before it is
followed. Answers are read up to a cap; a bigger one fails instead of filling memory. Proxies from
the environment are not used (`trust_env = False`): the check would be of the proxy, not the forge.

PyGithub builds its own sessions inside its connection classes (and copies its requester for lazy
objects), so it cannot be handed a session: `install_github()` makes its connection classes mount
the adapter of the guard bound to the current context (`bind()`); with no guard bound they behave
as PyGithub's own (offline use, no policy).
"""

from __future__ import annotations

import contextvars
import socket
from typing import Any

import requests
import requests.adapters
from github import Requester
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection as urllib3_connection

from projectgen.outbound.policy import Guard, Kind, Refused, display

_BOUND: contextvars.ContextVar[Guard | None] = contextvars.ContextVar(
    "projectgen_outbound_guard", default=None
)


class AnswerTooLarge(Refused):
    pass


def _connection_class(base: type[HTTPConnection], guard: Guard, kind: Kind) -> type[HTTPConnection]:
    class Checked(base):  # type: ignore[valid-type,misc]
        def _new_conn(self) -> socket.socket:
            addresses = guard.addresses(kind, self.host, self.port or 0)
            error: Exception | None = None
            for address in addresses:
                try:
                    return urllib3_connection.create_connection(
                        (str(address), self.port),
                        self.timeout,
                        source_address=self.source_address,
                        socket_options=self.socket_options,
                    )
                except TimeoutError as exc:
                    error = ConnectTimeoutError(self, f"Connection to {self.host} timed out")
                    error.__cause__ = exc
                except OSError as exc:
                    error = NewConnectionError(self, f"Failed to establish a new connection: {exc}")
            assert error is not None
            raise error

    return Checked


class CheckedAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, guard: Guard, kind: Kind = "forge", **kwargs: Any) -> None:
        self.guard = guard
        self.kind = kind
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        http = type(
            "CheckedHTTPPool",
            (HTTPConnectionPool,),
            {"ConnectionCls": _connection_class(HTTPConnection, self.guard, self.kind)},
        )
        https = type(
            "CheckedHTTPSPool",
            (HTTPSConnectionPool,),
            {"ConnectionCls": _connection_class(HTTPSConnection, self.guard, self.kind)},
        )
        self.poolmanager.pool_classes_by_scheme = {"http": http, "https": https}

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        raise Refused(
            "a proxy was configured for a forge request; the outbound policy does not use proxies", "proxies"
        )

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, stream: bool = False, **kwargs: Any
    ) -> requests.Response:
        self.guard.check(self.kind, request.url or "")
        response = super().send(request, stream=True, **kwargs)
        cap = self.guard.limits.answer_max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            response.close()
            raise self._too_large(request)
        body = bytearray()
        for chunk in response.iter_content(64 * 1024):
            body += chunk
            if len(body) > cap:
                response.close()
                raise self._too_large(request)
        response._content = bytes(body)
        response._content_consumed = True  # type: ignore[attr-defined]
        return response

    def _too_large(self, request: requests.PreparedRequest) -> AnswerTooLarge:
        cap = self.guard.limits.answer_max_bytes
        return AnswerTooLarge(
            f"the answer of {display(request.url or '')} is larger than {cap} bytes "
            "(PROJECTGEN_FORGE_MAX_ANSWER_BYTES); not read",
            "answer-size",
        )


def session(guard: Guard | None, kind: Kind = "forge") -> requests.Session:
    """A requests Session whose every request goes through the guard (a plain one without)."""
    s = requests.Session()
    if guard is not None:
        s.trust_env = False
        adapter = CheckedAdapter(guard, kind)
        s.mount("https://", adapter)
        s.mount("http://", adapter)
    return s


def bind(guard: Guard | None) -> contextvars.Token[Guard | None]:
    """Bind `guard` to the current context for PyGithub's connections (see `install_github`)."""
    install_github()
    return _BOUND.set(guard)


def unbind(token: contextvars.Token[Guard | None]) -> None:
    _BOUND.reset(token)


_installed = False


def install_github() -> None:
    global _installed
    if _installed:
        return

    class CheckedHTTPS(Requester.HTTPSRequestsConnectionClass):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            _mount(self)

    class CheckedHTTP(Requester.HTTPRequestsConnectionClass):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            _mount(self)

    Requester.Requester.injectConnectionClasses(CheckedHTTP, CheckedHTTPS)
    _installed = True


def _mount(connection: Any) -> None:
    guard = _BOUND.get()
    if guard is None:
        return
    connection.session.trust_env = False
    adapter = CheckedAdapter(guard, "forge", max_retries=getattr(connection, "retry", 0))
    connection.session.mount("https://", adapter)
    connection.session.mount("http://", adapter)
