"""Who is asking, and may they: the delegated authentication and authorisation of an aggregated API.

kube-apiserver authenticates the user (by whatever method the cluster uses), then proxies the
request to us with its front-proxy client certificate and the user in ``X-Remote-*`` headers. The
headers mean something only on a connection that presents that certificate: it must be signed by
the requestheader CA and, when the cluster lists ``requestheader-allowed-names``, carry one of
them as CN. The CA, the names and the header names are read from
``kube-system/extension-apiserver-authentication`` exactly as kube-apiserver published them
(what metrics-server and every generic apiserver do), and re-read periodically so a rotation is
followed.

A second trusted issuer is the operator's own serving CA, for one CN only
(:data:`~projectgen.serving.tls.SHARD_PROXY_CN`): a shard forwarding a download to the shard that
holds the archive. It forwards the headers it was given; the receiving shard authorises again.

Authorisation is a SubjectAccessReview per request: ``get`` on ``repositoryexports/archive`` in
the API group ``download.projectgen.io``, the same attributes kube-apiserver checks before it
proxies, so one RBAC rule (``manifests/download/rbac.yaml``, aggregated to view/edit/admin)
governs both, and a request that reaches the operator some other way is still checked.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

import urllib3
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from projectgen.serving.tls import API_TIMEOUT, SHARD_PROXY_CN

AUTH_CONFIGMAP = ("kube-system", "extension-apiserver-authentication")
log = logging.getLogger(__name__)


class AuthConfigError(RuntimeError):
    pass


class Unauthenticated(Exception):
    """The request did not come through kube-apiserver (or a shard): 401."""


@dataclass(frozen=True)
class RequestHeaderConfig:
    """The ``requestheader-*`` keys of ``extension-apiserver-authentication``."""

    ca_pem: bytes
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    uid_headers: tuple[str, ...] = ()
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)

    @classmethod
    def from_configmap_data(cls, data: Mapping[str, str]) -> RequestHeaderConfig:
        ca = data.get("requestheader-client-ca-file")
        if not ca:
            raise AuthConfigError(
                "kube-system/extension-apiserver-authentication has no requestheader-client-ca-file: "
                "kube-apiserver runs without --requestheader-client-ca-file (the aggregation layer is off)"
            )

        def names(key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
            raw = data.get(key)
            if raw is None:
                return default
            value = json.loads(raw)
            return tuple(str(v) for v in value or [])

        return cls(
            ca_pem=ca.encode(),
            allowed_names=names("requestheader-allowed-names"),
            username_headers=names("requestheader-username-headers"),
            uid_headers=names("requestheader-uid-headers"),
            group_headers=names("requestheader-group-headers"),
            extra_prefixes=names("requestheader-extra-headers-prefix"),
        )


def read_requestheader_config(core: client.CoreV1Api) -> RequestHeaderConfig:
    namespace, name = AUTH_CONFIGMAP
    try:
        cm = core.read_namespaced_config_map(name, namespace, _request_timeout=API_TIMEOUT)
    except ApiException as exc:
        raise AuthConfigError(
            f"reading ConfigMap {namespace}/{name}: HTTP {exc.status} {exc.reason}"
        ) from None
    return RequestHeaderConfig.from_configmap_data(cm.data or {})


@dataclass(frozen=True)
class User:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    via: str = "front-proxy"
    """front-proxy (kube-apiserver) or shard (forwarded by another shard)."""


def _certs(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def _signed_by(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


class Authenticator:
    """Turns a TLS peer certificate plus headers into a :class:`User`, or raises :class:`Unauthenticated`.

    The TLS handshake already verified the chain against every trusted CA; this decides which
    issuer signed the certificate and whether that issuer may vouch for a user with that CN."""

    def __init__(self, config: RequestHeaderConfig, own_ca_pem: bytes | None = None) -> None:
        self.config = config
        self._front_proxy_cas = _certs(config.ca_pem)
        self._own_cas = _certs(own_ca_pem) if own_ca_pem else []

    def trusted_pems(self) -> list[bytes]:
        own = [b"".join(c.public_bytes(_PEM) for c in self._own_cas)] if self._own_cas else []
        return [self.config.ca_pem, *own]

    def authenticate(self, peer_der: bytes | None, headers: Mapping[str, str]) -> User:
        return self._user(headers, self.verify_peer(peer_der))

    def verify_peer(self, peer_der: bytes | None) -> str:
        """Which trusted party the client certificate is: ``front-proxy`` or ``shard``."""
        if not peer_der:
            raise Unauthenticated(
                "no client certificate: only kube-apiserver's front proxy may call this API"
            )
        cert = x509.load_der_x509_certificate(peer_der)
        cn = _common_name(cert)
        if _signed_by(cert, self._front_proxy_cas):
            if self.config.allowed_names and cn not in self.config.allowed_names:
                raise Unauthenticated(
                    f"client certificate CN {cn!r} is not one of requestheader-allowed-names"
                )
            via = "front-proxy"
        elif self._own_cas and cn == SHARD_PROXY_CN and _signed_by(cert, self._own_cas):
            via = "shard"
        else:
            raise Unauthenticated("client certificate not signed by the requestheader CA")
        return via

    def _user(self, headers: Mapping[str, str], via: str) -> User:
        getall = getattr(headers, "getall", None)

        def values(name: str) -> list[str]:
            if getall is not None:
                return list(getall(name, []))
            value = headers.get(name)
            return [value] if value is not None else []

        name = next((v for h in self.config.username_headers for v in values(h) if v), "")
        if not name:
            raise Unauthenticated("the front proxy sent no user")
        uid = next((v for h in self.config.uid_headers for v in values(h) if v), "")
        groups = tuple(g for h in self.config.group_headers for g in values(h))
        extra: dict[str, list[str]] = {}
        for header in dict.fromkeys(headers):  # a repeated header: its values once
            for prefix in self.config.extra_prefixes:
                if header.lower().startswith(prefix.lower()):
                    # Keys are percent-encoded by the front proxy (k8s.io/apiserver requestheader).
                    key = unquote(header[len(prefix) :].lower())
                    extra.setdefault(key, []).extend(values(header))
        return User(name, uid, groups, {k: tuple(v) for k, v in extra.items()}, via)


_PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


def authorize(
    api: client.ApiClient,
    user: User,
    *,
    verb: str,
    group: str,
    resource: str,
    subresource: str,
    namespace: str,
    name: str,
) -> Decision:
    """A SubjectAccessReview for ``user``. API errors deny (and are logged), never allow."""
    body = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user.name,
            uid=user.uid or None,
            groups=list(user.groups),
            extra={k: list(v) for k, v in user.extra.items()} or None,
            resource_attributes=client.V1ResourceAttributes(
                verb=verb,
                group=group,
                version="v1alpha1",
                resource=resource,
                subresource=subresource,
                namespace=namespace,
                name=name,
            ),
        )
    )
    try:
        review = client.AuthorizationV1Api(api).create_subject_access_review(
            body, _request_timeout=API_TIMEOUT
        )
    except ApiException as exc:
        log.warning("SubjectAccessReview failed: HTTP %s %s", exc.status, exc.reason)
        return Decision(False, f"the authorization check failed (HTTP {exc.status})")
    except urllib3.exceptions.HTTPError as exc:  # a timeout, a refused connection
        log.warning("SubjectAccessReview failed: %s", type(exc).__name__)
        return Decision(False, "the authorization check failed (the API server did not answer in time)")
    status = review.status
    return Decision(bool(status and status.allowed), (status.reason or "") if status else "")


def peer_certificate(transport: object) -> bytes | None:
    """The DER client certificate of an aiohttp transport (None when the client sent none)."""
    ssl_object = getattr(transport, "get_extra_info", lambda _: None)("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    return ssl_object.getpeercert(binary_form=True)
