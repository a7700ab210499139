"""The operator's Kubernetes version check (projectgen.kubeversion) and the pinned matrix."""

from __future__ import annotations

import pytest

from projectgen import kubeversion
from projectgen.kubeversion import KubeVersion, UnsupportedKubernetes
from projectgen_dev import controlplane


@pytest.mark.parametrize(
    ("info", "key", "text"),
    [
        ({"gitVersion": "v1.37.2"}, (1, 37), "v1.37.2"),
        ({"gitVersion": "v1.36.3-gke.1200"}, (1, 36), "v1.36.3-gke.1200"),
        ({"gitVersion": "v1.37.2", "emulationMajor": "1", "emulationMinor": "37"}, (1, 37), "v1.37.2"),
        (
            {"gitVersion": "v1.37.2", "emulationMajor": "1", "emulationMinor": "34"},
            (1, 34),
            "1.34 (emulated by v1.37.2)",
        ),
    ],
)
def test_the_version_is_the_one_whose_apis_are_served(
    info: dict[str, str], key: tuple[int, int], text: str
) -> None:
    version = KubeVersion.from_info(info)
    assert (version.key, version.text) == (key, text)


def test_older_than_the_range_is_refused_naming_the_version() -> None:
    with pytest.raises(
        UnsupportedKubernetes, match=r"Kubernetes v1\.34\.4 is not supported: projectgen needs 1\.35"
    ):
        kubeversion.check(KubeVersion.parse("v1.34.4"))


def test_the_range_runs_quietly_and_newer_runs_with_a_warning() -> None:
    for minor in range(kubeversion.OLDEST_MINOR, kubeversion.NEWEST_TESTED_MINOR + 1):
        assert kubeversion.check(KubeVersion.parse(f"v1.{minor}.0")) is None
    warning = kubeversion.check(KubeVersion.parse("v1.38.0"))
    assert warning is not None and "v1.38.0 is newer than the versions projectgen is tested on" in warning


def test_mutating_admission_policy_from_1_36() -> None:
    assert not KubeVersion.parse("v1.35.4").serves_mutating_admission_policy
    assert KubeVersion.parse("v1.36.0").serves_mutating_admission_policy


def test_the_matrix_pins_one_patch_of_each_supported_minor_newest_first() -> None:
    minors = [KubeVersion.parse(v).minor for v in controlplane.KUBE_VERSIONS]
    assert minors == list(range(kubeversion.NEWEST_TESTED_MINOR, kubeversion.OLDEST_MINOR - 1, -1))
    assert next(iter(controlplane.KUBE_VERSIONS)) == controlplane.DEFAULT_K8S_VERSION


@pytest.mark.parametrize(
    ("wanted", "version"),
    [("", "v1.37.2"), ("1.36", "v1.36.3"), ("v1.35", "v1.35.4"), ("v1.36.3", "v1.36.3")],
)
def test_the_switch_names_a_pinned_version_or_its_minor(wanted: str, version: str) -> None:
    assert controlplane.selected_version(wanted) == version


@pytest.mark.parametrize("wanted", ["1.34", "v1.36.2", "latest"])
def test_the_switch_refuses_what_is_not_pinned(wanted: str) -> None:
    with pytest.raises(ValueError, match=r"PROJECTGEN_KUBE_VERSION=.* is not one of the pinned versions"):
        controlplane.selected_version(wanted)
