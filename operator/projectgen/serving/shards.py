"""The client side of shard forwarding: TLS sessions with a client certificate from the serving CA.

Why it renews itself: the certificate is valid for :data:`~projectgen.serving.tls.SERVING_VALIDITY`
(90 days) and an operator process may live longer. It is reissued once :data:`RENEW_AT` of its life
has passed, and at once when the CA changes (its Secret recreated: :meth:`ShardClient.follow`), so
the certificate presented is always valid and from the CA the other shards trust. A session being
replaced is closed when the last download it carries ends: a renewal cuts nothing.

Time comes from an injected clock, so a test can move 90 days in a line.
"""

from __future__ import annotations

import contextlib
import datetime
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from cryptography import x509
from multidict import CIMultiDict

from projectgen.serving.tls import SHARD_PROXY_CN, CertificateAuthority, load_chain

Clock = Callable[[], datetime.datetime]
RENEW_AT = 2 / 3
"""The fraction of its validity after which the client certificate is reissued."""
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class _Credential:
    session: aiohttp.ClientSession
    cert_pem: bytes
    renew_at: datetime.datetime
    in_flight: int = 0


class ShardClient:
    def __init__(self, ca: CertificateAuthority, clock: Clock = utcnow) -> None:
        self.ca = ca
        self.clock = clock
        self._current: _Credential | None = None
        self._retired: list[_Credential] = []

    def follow(self, ca: CertificateAuthority) -> None:
        """Use ``ca`` from the next request on (no-op when it is the one in use)."""
        if ca != self.ca:
            self.ca = ca
            self._retire()

    def certificate(self) -> bytes:
        """The client certificate the next request presents (issued or renewed as due)."""
        return self._credential().cert_pem

    @contextlib.asynccontextmanager
    async def get(self, url: str, headers: CIMultiDict[str]) -> AsyncIterator[aiohttp.ClientResponse]:
        credential = self._credential()
        await self._close_idle()
        credential.in_flight += 1
        try:
            async with credential.session.get(url, headers=headers) as response:
                yield response
        finally:
            credential.in_flight -= 1
            await self._close_idle()

    async def close(self) -> None:
        self._retire()
        for credential in self._retired:
            await credential.session.close()
        self._retired.clear()

    def _credential(self) -> _Credential:
        if self._current is not None and self.clock() >= self._current.renew_at:
            self._retire()
        if self._current is None:
            self._current = self._issue()
        return self._current

    def _issue(self) -> _Credential:
        cert_pem, key_pem = self.ca.issue(SHARD_PROXY_CN, client=True, now=self.clock())
        cert = x509.load_pem_x509_certificate(cert_pem)
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.ca.cert_pem.decode())
        load_chain(context, cert_pem, key_pem)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context), timeout=TIMEOUT, auto_decompress=False
        )
        return _Credential(session, cert_pem, start + (end - start) * RENEW_AT)

    def _retire(self) -> None:
        if self._current is not None:
            self._retired.append(self._current)
            self._current = None

    async def _close_idle(self) -> None:
        idle = [c for c in self._retired if c.in_flight == 0]
        self._retired = [c for c in self._retired if c.in_flight]
        for credential in idle:
            await credential.session.close()
