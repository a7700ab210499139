"""The parts of projectgen_dev.node that need no root: the pause image archive and the apiserver
flag overrides (the node itself is tested in tests/integration/test_node_install.py)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

from projectgen_dev.controlplane import _override_flags
from projectgen_dev.node import PAUSE_IMAGE, write_pause_archive


def test_the_pause_archive_is_an_oci_layout_whose_digests_hold(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF not really")
    archive = write_pause_archive(binary, tmp_path / "pause.tar")
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}

    def blob(descriptor: dict[str, object]) -> bytes:
        data = files[f"blobs/sha256/{str(descriptor['digest']).removeprefix('sha256:')}"]
        assert f"sha256:{hashlib.sha256(data).hexdigest()}" == descriptor["digest"]
        assert len(data) == descriptor["size"]
        return data

    (entry,) = json.loads(files["index.json"])["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == PAUSE_IMAGE
    manifest = json.loads(blob(entry))
    config = json.loads(blob(manifest["config"]))
    assert config["config"]["Entrypoint"] == ["/pause"] and config["config"]["User"] == "65535:65535"
    (layer,) = manifest["layers"]
    raw = gzip.decompress(blob(layer))
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(raw).hexdigest()}"]
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        (member,) = tar.getmembers()
        assert member.name == "pause" and member.mode == 0o755
        assert tar.extractfile(member).read() == binary.read_bytes()  # type: ignore[union-attr]


def test_apiserver_flag_overrides_replace_drop_and_add() -> None:
    argv = ["ip", "netns", "exec", "ns", "kube-apiserver", "--a=1", "--disable-admission-plugins=X", "--b=2"]
    out = _override_flags(argv, {"--a": "9", "--disable-admission-plugins": None, "--c": "3"})
    assert out == ["ip", "netns", "exec", "ns", "kube-apiserver", "--b=2", "--a=9", "--c=3"]
    assert _override_flags(argv, {}) == argv
