"""The serving certificate, the CA behind it, and the caBundles that must name that CA.

Why the operator makes its own CA: an APIService (and a webhook) is dialled by kube-apiserver,
which verifies the server against the ``caBundle`` of the object, so any CA works as long as that
bundle follows it. The CA lives in a Secret of the operator's namespace (``projectgen-serving-ca``)
so every replica and every shard presents a certificate from the same CA, and a restart does not
break the bundle. Each process issues its own short-lived serving certificate from it, in memory.
The key reaches OpenSSL through a ``memfd`` (``/proc/self/fd/N``): no secret is written to a file.

An admin who would rather use cert-manager (or any PKI) mounts a ``kubernetes.io/tls`` Secret and
sets ``PROJECTGEN_SERVING_CERT_DIR``; the files are reloaded when they change, and ``ca.crt``, when
present, is what the caBundle is set to (with cert-manager's cainjector, leave it out).

The caBundle sync is generic (:class:`CABundleTarget`): the APIService has one bundle
(``spec.caBundle``), a Mutating/ValidatingWebhookConfiguration one per webhook.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import ipaddress
import logging
import os
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client
from kubernetes.client.exceptions import ApiException

API_TIMEOUT = 10.0
"""Seconds any one API call of the serving side may take (SubjectAccessReview, the export's list,
the CA Secret, the requestheader ConfigMap, caBundles): without it a stalled API server holds a
download's thread and slot, or the refresh loop that rotates certificates, for ever."""

CA_SECRET = "projectgen-serving-ca"  # noqa: S105  (a Secret's name)
CA_CERT_KEY, CA_KEY_KEY = "ca.crt", "ca.key"
CA_VALIDITY = datetime.timedelta(days=3650)
SERVING_VALIDITY = datetime.timedelta(days=90)
SHARD_PROXY_CN = "projectgen-shard-proxy"
CN_MAX = 64  # RFC 5280 ub-common-name
"""The client certificate one shard presents to another when it forwards a download."""
log = logging.getLogger(__name__)


class TLSError(RuntimeError):
    pass


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=ca,
        crl_sign=ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def new_ca(common_name: str = "projectgen serving CA") -> tuple[bytes, bytes]:
    """A new self-signed CA: ``(cert_pem, key_pem)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


@dataclass(frozen=True)
class CertificateAuthority:
    cert_pem: bytes
    key_pem: bytes

    def issue(
        self,
        common_name: str,
        *,
        server_names: Sequence[str] = (),
        client: bool = False,
        organizations: Sequence[str] = (),
        now: datetime.datetime | None = None,
    ) -> tuple[bytes, bytes]:
        """A leaf certificate: for serving (SANs ``server_names``) or, with ``client``, for a client
        (kube-apiserver reads a client certificate's ``organizations`` as the user's groups), valid
        from ``now`` (default: the current time)."""
        ca_cert = x509.load_pem_x509_certificate(self.cert_pem)
        ca_key = serialization.load_pem_private_key(self.key_pem, None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise TLSError("the serving CA's key is not an EC key")
        key = ec.generate_private_key(ec.SECP256R1())
        now = now or datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
                    + [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
                )
            )
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + SERVING_VALIDITY, ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(ca=False), critical=True)
        )
        if server_names:
            sans: list[x509.GeneralName] = []
            for name in server_names:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    sans.append(x509.DNSName(name))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def ensure_ca(core: client.CoreV1Api, namespace: str, name: str = CA_SECRET) -> CertificateAuthority:
    """The CA of the Secret ``namespace/name``, created when missing (first writer wins, the others
    read what it wrote: every shard and replica ends up with the same CA)."""
    for _ in range(3):
        try:
            secret = core.read_namespaced_secret(name, namespace, _request_timeout=API_TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise TLSError(f"reading Secret {namespace}/{name}: HTTP {exc.status} {exc.reason}") from None
        else:
            data = secret.data or {}
            try:
                return CertificateAuthority(
                    base64.b64decode(data[CA_CERT_KEY]), base64.b64decode(data[CA_KEY_KEY])
                )
            except (KeyError, ValueError):
                raise TLSError(
                    f"Secret {namespace}/{name} lacks {CA_CERT_KEY} and {CA_KEY_KEY}: delete it and the "
                    "operator makes a new CA"
                ) from None
        cert_pem, key_pem = new_ca()
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, labels={"app.kubernetes.io/name": "projectgen"}),
            type="Opaque",
            data={
                CA_CERT_KEY: base64.b64encode(cert_pem).decode(),
                CA_KEY_KEY: base64.b64encode(key_pem).decode(),
            },
        )
        try:
            core.create_namespaced_secret(namespace, body, _request_timeout=API_TIMEOUT)
        except ApiException as exc:
            if exc.status != 409:  # 409: another shard was first; read its CA
                raise TLSError(
                    f"creating Secret {namespace}/{name}: HTTP {exc.status} {exc.reason}"
                ) from None
        else:
            log.info("created the serving CA in Secret %s/%s", namespace, name)
            return CertificateAuthority(cert_pem, key_pem)
    raise TLSError(f"Secret {namespace}/{name}: created and gone again")


@contextlib.contextmanager
def _memfile(data: bytes) -> Iterator[str]:
    """A path to ``data`` that exists only in memory, for OpenSSL's file-based loaders."""
    fd = os.memfd_create("projectgen-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def load_chain(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    with _memfile(cert_pem) as cert, _memfile(key_pem) as key:
        context.load_cert_chain(cert, key)


@dataclass
class ServingIdentity:
    """What the server presents, what it trusts for client certificates, and the bundle to publish."""

    cert_pem: bytes
    key_pem: bytes
    ca_bundle: bytes | None
    """The CA the caBundles must hold; None: leave them alone (cainjector or the admin keeps them)."""
    ca: CertificateAuthority | None = None
    """The operator's own CA (issues shard-proxy client certificates); None with admin-supplied files."""
    source: Path | None = None
    _stamp: tuple[float, ...] = ()

    @classmethod
    def from_ca(
        cls, ca: CertificateAuthority, names: Sequence[str], now: datetime.datetime | None = None
    ) -> ServingIdentity:
        # The CN is for people reading the certificate; clients check the SANs. X.509 caps a CN at 64
        # characters, which a long namespace's Service name passes (a 50-character namespace does).
        cn = names[0] if names and len(names[0]) <= CN_MAX else "projectgen-api"
        cert, key = ca.issue(cn, server_names=names, now=now)
        return cls(cert, key, ca.cert_pem, ca)

    @classmethod
    def from_dir(cls, directory: Path) -> ServingIdentity:
        try:
            cert, key = (directory / "tls.crt").read_bytes(), (directory / "tls.key").read_bytes()
        except OSError as exc:
            raise TLSError(
                f"PROJECTGEN_SERVING_CERT_DIR={directory}: needs tls.crt and tls.key ({exc.strerror})"
            ) from None
        ca_file = directory / "ca.crt"
        bundle = ca_file.read_bytes() if ca_file.is_file() else None
        return cls(cert, key, bundle or None, None, directory, _stamp_of(directory))

    def expires_at(self) -> float:
        """When the serving certificate (the first in tls.crt) expires, in seconds since the epoch."""
        return x509.load_pem_x509_certificate(self.cert_pem).not_valid_after_utc.timestamp()

    def changed_on_disk(self) -> bool:
        return self.source is not None and _stamp_of(self.source) != self._stamp

    def server_context(self, client_cas: Sequence[bytes]) -> ssl.SSLContext:
        """TLS 1.2+; client certificates optional at the handshake (a webhook call carries none) and
        required per route by :mod:`projectgen.serving.auth`, which checks who signed them."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_OPTIONAL
        load_chain(context, self.cert_pem, self.key_pem)
        for pem in client_cas:
            context.load_verify_locations(cadata=pem.decode())
        return context


def _stamp_of(directory: Path) -> tuple[float, ...]:
    stamps = []
    for name in ("tls.crt", "tls.key", "ca.crt"):
        try:
            stamps.append((directory / name).stat().st_mtime)
        except OSError:
            stamps.append(0.0)
    return tuple(stamps)


def fingerprint(pem: bytes) -> str:
    return hashlib.sha256(pem).hexdigest()[:16]


@dataclass(frozen=True)
class CABundleTarget:
    """An object whose caBundle must name the serving CA: an APIService (``spec.caBundle``) or a
    Mutating/ValidatingWebhookConfiguration (``webhooks[*].clientConfig.caBundle``)."""

    group: str
    version: str
    plural: str
    name: str
    optional: bool = False
    """Installed only on some clusters: its absence is not worth a warning."""

    @classmethod
    def apiservice(cls, name: str) -> CABundleTarget:
        return cls("apiregistration.k8s.io", "v1", "apiservices", name)

    @classmethod
    def mutating_webhook(cls, name: str, *, optional: bool = False) -> CABundleTarget:
        return cls("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", name, optional)

    def patch_for(self, obj: dict[str, Any], bundle: bytes) -> dict[str, Any] | None:
        """The merge patch that puts ``bundle`` in place, None when it already is (pure)."""
        encoded = base64.b64encode(bundle).decode()
        if self.plural == "apiservices":
            spec = obj.get("spec") or {}
            if spec.get("caBundle") == encoded:
                return None
            return {"spec": {"caBundle": encoded}}
        webhooks = [dict(w) for w in obj.get("webhooks") or []]
        if all((w.get("clientConfig") or {}).get("caBundle") == encoded for w in webhooks):
            return None
        for w in webhooks:
            w["clientConfig"] = {**(w.get("clientConfig") or {}), "caBundle": encoded}
        # A merge patch replaces the list whole; resourceVersion makes a concurrent edit a 409, not lost.
        return {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "webhooks": webhooks}


def sync_ca_bundle(api: client.ApiClient, target: CABundleTarget, bundle: bytes) -> bool:
    """Make the target's caBundle ``bundle``; True when it was patched. A missing object is logged
    and left alone (it may be installed later: the caller retries periodically)."""
    custom = client.CustomObjectsApi(api)
    try:
        obj = cast(
            dict[str, Any],
            custom.get_cluster_custom_object(
                target.group, target.version, target.plural, target.name, _request_timeout=API_TIMEOUT
            ),
        )
    except ApiException as exc:
        if exc.status == 404:
            (log.debug if target.optional else log.warning)(
                "%s %s not found: its caBundle is set once it exists", target.plural, target.name
            )
            return False
        raise TLSError(f"reading {target.plural}/{target.name}: HTTP {exc.status} {exc.reason}") from None
    patch = target.patch_for(obj, bundle)
    if patch is None:
        return False
    try:
        custom.patch_cluster_custom_object(
            target.group, target.version, target.plural, target.name, patch, _request_timeout=API_TIMEOUT
        )
    except ApiException as exc:
        raise TLSError(f"patching the caBundle of {target.plural}/{target.name}: HTTP {exc.status}") from None
    log.info("set the caBundle of %s/%s (CA %s)", target.plural, target.name, fingerprint(bundle))
    return True
