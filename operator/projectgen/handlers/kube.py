"""The few Kubernetes API calls the handlers make besides kopf's own: status patches between
transitions, and reads of ConfigMaps and Secrets in the resource's own namespace."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import kopf
import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from projectgen.api.v1alpha1 import GROUP, VERSION
from projectgen.generation.sources import ConfigMapData, decode_configmap
from projectgen.kubeversion import KubeVersion


class ApiUnavailable(kopf.TemporaryError):
    """A call failed in a way that may heal (5xx, 429, connection): retry later.

    A kopf temporary error, so a call that fails this way outside the handlers' own `except`
    (a status write while the API server restarts) is retried in seconds, not after kopf's
    one-minute backoff for unexpected exceptions."""

    def __init__(self, message: str, delay: float = 5.0) -> None:
        super().__init__(message, delay=delay)


class Forbidden(Exception):
    """The operator's ServiceAccount may not do this: say so, and retry later (RBAC may be fixed)."""


_lock = threading.Lock()
_client: kubernetes.client.ApiClient | None = None


def api_client() -> kubernetes.client.ApiClient:
    """One client per process, configured like kopf: in-cluster, else the kubeconfig."""
    global _client
    with _lock:
        if _client is None:
            configuration = kubernetes.client.Configuration()
            if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
                kubernetes.config.load_incluster_config(client_configuration=configuration)
            else:
                kubernetes.config.load_kube_config(client_configuration=configuration)
            configuration.retries = 3
            _client = kubernetes.client.ApiClient(configuration)
        return _client


def _unreachable(exc: urllib3.exceptions.HTTPError, what: str) -> ApiUnavailable:
    """A connection error (refused, reset, timed out: the API server restarting) as ApiUnavailable."""
    return ApiUnavailable(f"{what} failed: the API server is unreachable ({type(exc).__name__})")


def _translate(exc: ApiException, what: str) -> Exception:
    if exc.status == 403:
        return Forbidden(f"the operator is not allowed to read {what} (403): check its RBAC")
    return ApiUnavailable(f"reading {what} failed: HTTP {exc.status} {exc.reason}")


def server_version() -> KubeVersion:
    """The API server's version (`/version`, readable by every authenticated user)."""
    try:
        # raw: the client's VersionInfo model may predate the emulation fields
        response: Any = kubernetes.client.VersionApi(api_client()).get_code(_preload_content=False)
        info = json.loads(response.data)
    except ApiException as exc:
        raise ApiUnavailable(
            f"reading the API server's version failed: HTTP {exc.status} {exc.reason}"
        ) from None
    except urllib3.exceptions.HTTPError as exc:
        raise _unreachable(exc, "reading the API server's version") from None
    return KubeVersion.from_info(info)


@dataclass
class Kube:
    """Calls scoped to one namespace: a resource can only make the operator read its own namespace."""

    namespace: str

    def patch_status(self, plural: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        api = kubernetes.client.CustomObjectsApi(api_client())
        try:
            result = cast(
                dict[str, Any],
                api.patch_namespaced_custom_object_status(
                    GROUP, VERSION, self.namespace, plural, name, {"status": status}
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise ApiUnavailable(
                f"status patch of {plural}/{name} failed: HTTP {exc.status} {exc.reason}"
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(exc, f"status patch of {plural}/{name}") from None
        return result

    def get_object(self, plural: str, name: str) -> dict[str, Any] | None:
        api = kubernetes.client.CustomObjectsApi(api_client())
        try:
            result = cast(
                dict[str, Any], api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _translate(exc, f"{plural}/{name}") from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(exc, f"reading {plural}/{name}") from None
        return result

    def patch_annotations(self, plural: str, name: str, annotations: dict[str, str]) -> None:
        api = kubernetes.client.CustomObjectsApi(api_client())
        try:
            api.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name, {"metadata": {"annotations": annotations}}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise _translate(exc, f"{plural}/{name}") from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(exc, f"annotating {plural}/{name}") from None

    def configmap(self, name: str) -> ConfigMapData | None:
        api = kubernetes.client.CoreV1Api(api_client())
        try:
            cm = api.read_namespaced_config_map(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _translate(exc, f"ConfigMap {name!r}") from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(exc, f"reading ConfigMap {name!r}") from None
        return decode_configmap(api_client().sanitize_for_serialization(cm))[1]

    def namespace_labels(self) -> dict[str, str]:
        """The labels of this namespace (the outbound policy's namespaceSelectors match them)."""
        api = kubernetes.client.CoreV1Api(api_client())
        try:
            ns = api.read_namespace(self.namespace)
        except ApiException as exc:
            raise _translate(exc, f"namespace {self.namespace!r}") from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(exc, f"reading namespace {self.namespace!r}") from None
        return dict((ns.metadata.labels if ns.metadata else None) or {})

    def secret_value(self, name: str, key: str) -> str | None:
        """The value of one key, or None when the Secret or the key does not exist.

        Raises SecretMissing with a message naming what is missing (never the value)."""
        return self.secret_values(name, [key])[key]

    def secret_values(self, name: str, keys: Sequence[str], optional: Sequence[str] = ()) -> dict[str, str]:
        """The values of `keys` (each must be there and not empty) and of the `optional` keys present,
        read in one request, decoded and stripped.

        Raises SecretMissing with a message naming what is missing (never a value)."""
        api = kubernetes.client.CoreV1Api(api_client())
        try:
            secret = api.read_namespaced_secret(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise SecretMissing(f"Secret {name!r} not found in namespace {self.namespace!r}") from None
            raise _translate(exc, f"Secret {name!r}") from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(exc, f"reading Secret {name!r}") from None
        data = secret.data or {}
        values: dict[str, str] = {}
        for key in [*keys, *optional]:
            if key not in data:
                if key in optional:
                    continue
                present = ", ".join(sorted(data)) or "none"
                raise SecretMissing(f"Secret {name!r} has no key {key!r} (keys: {present})")
            value = base64.b64decode(data[key]).decode("utf-8", "replace").strip()
            if not value:
                raise SecretMissing(f"key {key!r} of Secret {name!r} is empty")
            values[key] = value
        return values


class SecretMissing(Exception):
    """The referenced Secret or key does not exist (yet)."""
