"""Stand-ins for what kube-controller-manager would do for the aggregated download API.

No controller-manager runs on the local control plane, so two of its jobs are done here, once, the
way its controllers do them: fold the ``aggregate-to-*`` ClusterRoles into view/edit/admin
(clusterrole-aggregation), and give a Service an EndpointSlice (the EndpointSlice controller).
"""

from __future__ import annotations

from typing import Any, cast

import kubernetes.client
from kubernetes.client.exceptions import ApiException


def aggregate_cluster_roles(api: kubernetes.client.ApiClient) -> None:
    """Set the rules of every ClusterRole with an aggregationRule to the union of the rules of the
    ClusterRoles its selectors match (what the clusterrole-aggregation controller keeps true)."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    roles: list[dict[str, Any]] = api.sanitize_for_serialization(rbac.list_cluster_role().items)
    for role in roles:
        selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
        if not selectors:
            continue
        rules: list[Any] = []
        for selector in selectors:
            wanted = (selector.get("matchLabels") or {}).items()
            for other in roles:
                labels = (other["metadata"].get("labels") or {}).items()
                if other["metadata"]["name"] != role["metadata"]["name"] and wanted <= labels:
                    rules += [r for r in other.get("rules") or [] if r not in rules]
        rbac.patch_cluster_role(role["metadata"]["name"], cast(Any, {"rules": rules}))


def endpoint_slice(
    api: kubernetes.client.ApiClient,
    namespace: str,
    service: str,
    address: str,
    port: int,
    port_name: str = "https",
) -> None:
    """An EndpointSlice for an existing Service (named ports: the Service's targetPort name)."""
    body = {
        "metadata": {
            "name": f"{service}-manual",
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "projectgen-dev",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    }
    try:
        kubernetes.client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(namespace, cast(Any, body))
    except ApiException as exc:
        if exc.status != 409:
            raise
