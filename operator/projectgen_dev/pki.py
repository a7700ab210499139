"""Certificates for the local control plane: the client CA (user certificates) and the front proxy.

The aggregation layer needs two things the kube-apiserver does not generate for itself: a
requestheader CA with the client certificate the aggregator presents to extension servers
(``--proxy-client-cert-file``), and, for users other than the admin token, a client CA whose
certificates name the user (CN) and groups (O), as a kubeadm cluster's do. The certificates are
the operator's own (:mod:`projectgen.serving.tls`); this only puts them in files for the processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from projectgen.serving import tls


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


class CertificateAuthority:
    """A CA in ``directory/<name>.crt|.key`` that issues client and server certificates."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self._ca = tls.CertificateAuthority(*tls.new_ca(f"projectgen-dev {name}"))
        self.cert = directory / f"{name}.crt"
        self.cert.write_bytes(self._ca.cert_pem)
        _write_private(directory / f"{name}.key", self._ca.key_pem)

    @property
    def pem(self) -> bytes:
        return self._ca.cert_pem

    def issue(
        self,
        filename: str,
        common_name: str,
        organizations: tuple[str, ...] = (),
        *,
        server_names: tuple[str, ...] = (),
    ) -> KeyPair:
        """A client certificate (CN user, O groups), or a server one when ``server_names`` is set."""
        cert, key = self._ca.issue(
            common_name, server_names=server_names, client=not server_names, organizations=organizations
        )
        pair = KeyPair(self.directory / f"{filename}.crt", self.directory / f"{filename}.key")
        pair.cert.write_bytes(cert)
        _write_private(pair.key, key)
        return pair
