"""RepositoryExport to zip / tar / tar.gz against a real kube-apiserver, checked with real tools."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from support import (
    EXPORTS,
    PROJECTS,
    OperatorProcess,
    condition,
    create,
    custom,
    get,
    inline_source,
    project_body,
    regenerate,
    wait_exported,
    wait_for,
    wait_phase,
)
from test_generatedproject import BIG_TEMPLATE, configmap, git_server, publish_template

from projectgen_dev.gitserver import GitHTTPServer

GROUP, VERSION = "projectgen.io", "v1alpha1"
FILES = {
    "README.md": "# Demo\n",
    "src/demo/__init__.py": "VERSION = '1'\n",
    "src/demo/cli.py": "def main() -> None:\n    print('hi')\n",
    "bin/demo": "#!/bin/sh\nexec python -m demo\n",
}

__all__ = ["git_server"]

pytestmark = pytest.mark.usefixtures("operator")


def export_body(name: str, project: str, export_type: str, **spec: Any) -> dict[str, Any]:
    return {
        "kind": "RepositoryExport",
        "metadata": {"name": name},
        "spec": {"generatedProjectRef": {"name": project}, "exportType": export_type, **spec},
    }


def done(api: client.ApiClient, namespace: str, name: str, timeout: float = 60) -> dict[str, Any]:
    obj = wait_phase(api, EXPORTS, namespace, name, "Completed", "Failed", timeout=timeout)
    assert obj["status"]["phase"] == "Completed", obj["status"]
    return obj


def make_project(api: client.ApiClient, namespace: str, name: str = "demo") -> dict[str, Any]:
    create(api, PROJECTS, namespace, project_body(name, [inline_source(FILES, executable=("bin/demo",))]))
    return wait_phase(api, PROJECTS, namespace, name, "Completed", timeout=60)


def extract(archive: Path, dest: Path) -> dict[str, tuple[str, int]]:
    dest.mkdir()
    if archive.suffix == ".zip":
        subprocess.run(["unzip", "-q", str(archive), "-d", str(dest)], check=True)
    else:
        subprocess.run(["tar", "-xf", str(archive), "-C", str(dest)], check=True)
    out = {}
    for path in sorted(dest.rglob("*")):
        assert not path.is_symlink()
        if path.is_file():
            out[path.relative_to(dest).as_posix()] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                path.stat().st_mode & 0o777,
            )
    return out


@pytest.mark.parametrize("export_type", ["zip", "tar", "tar.gz"])
def test_archive_matches_the_manifest(
    api_client: client.ApiClient, namespace: str, export_type: str, tmp_path: Path
) -> None:
    project = make_project(api_client, namespace)
    create(api_client, EXPORTS, namespace, export_body("e", "demo", export_type, repositoryName="demo-svc"))
    obj = done(api_client, namespace, "e")
    status = obj["status"]
    archive = Path(status["archivePath"])
    assert archive.name == f"demo-svc.{export_type}"
    data = archive.read_bytes()
    assert status["archiveSize"] == len(data)
    assert status["archiveSha256"] == hashlib.sha256(data).hexdigest()
    assert status["exportedContentHash"] == project["status"]["contentHash"]
    assert condition(obj, "Ready")["status"] == "True"
    if export_type == "zip":
        subprocess.run(["unzip", "-tq", str(archive)], check=True)
        subprocess.run(["python", "-m", "zipfile", "-t", str(archive)], check=True, capture_output=True)
        names = zipfile.ZipFile(archive).namelist()
    else:
        names = subprocess.run(
            ["tar", "-tf", str(archive)], check=True, capture_output=True, text=True
        ).stdout.split()
    assert all(n.startswith("demo-svc/") and ".." not in n.split("/") for n in names)
    extracted = extract(archive, tmp_path / "x")
    expected = {
        f"demo-svc/{f['path']}": (f["sha256"], 0o755 if f["path"] == "bin/demo" else 0o644)
        for f in project["status"]["files"]
    }
    assert extracted == expected
    # Owned by its project, labelled with it (kopf applies the metadata patch after the handler).
    obj = wait_for(api_client, EXPORTS, namespace, "e", lambda o: bool(o["metadata"].get("ownerReferences")))
    refs = obj["metadata"]["ownerReferences"]
    assert [(r["kind"], r["name"], r["uid"]) for r in refs] == [
        ("GeneratedProject", "demo", project["metadata"]["uid"])
    ]
    assert obj["metadata"]["labels"]["projectgen.io/generated-project"] == "demo"


def test_same_content_gives_the_same_bytes(api_client: client.ApiClient, namespace: str) -> None:
    make_project(api_client, namespace, "one")
    make_project(api_client, namespace, "two")
    for name, project in (("a", "one"), ("b", "two")):
        create(api_client, EXPORTS, namespace, export_body(name, project, "tar.gz", repositoryName="same"))
    first, second = done(api_client, namespace, "a")["status"], done(api_client, namespace, "b")["status"]
    assert first["archiveSha256"] == second["archiveSha256"]
    assert first["archivePath"] != second["archivePath"]


def test_pending_until_the_project_exists_and_completes(api_client: client.ApiClient, namespace: str) -> None:
    create(api_client, EXPORTS, namespace, export_body("early", "later", "zip"))
    obj = wait_phase(api_client, EXPORTS, namespace, "early", "Pending", timeout=30)
    assert "waiting for GeneratedProject 'later'" in condition(obj, "Ready")["message"]
    assert condition(obj, "Reconciling")["status"] == "True"
    time.sleep(2)
    assert get(api_client, EXPORTS, namespace, "early")["status"]["phase"] == "Pending"  # type: ignore[index]
    make_project(api_client, namespace, "later")
    status = done(api_client, namespace, "early")["status"]
    assert Path(status["archivePath"]).name == "later.zip"


def broken_project(api: client.ApiClient, namespace: str) -> None:
    """GeneratedProject `broken`: its template has tasks and the spec says `tasks: Fail`: it fails for good."""
    configmap(api, namespace, "tpl", {"copier": "_tasks: ['true']\n"})
    items = [{"key": "copier", "path": "copier.yml"}]
    source = {"template": {"configMap": {"name": "tpl", "items": items}, "tasks": "Fail"}}
    create(api, PROJECTS, namespace, project_body("broken", [source]))


def test_failed_project_fails_the_export(api_client: client.ApiClient, namespace: str) -> None:
    broken_project(api_client, namespace)
    create(api_client, EXPORTS, namespace, export_body("e", "broken", "zip"))
    obj = wait_phase(api_client, EXPORTS, namespace, "e", "Failed", timeout=60)
    assert "GeneratedProject 'broken' failed" in obj["status"]["errorMessage"]
    assert condition(obj, "Stalled")["status"] == "True"


def test_a_fixed_project_takes_its_failed_export_back_to_pending(
    api_client: client.ApiClient, namespace: str
) -> None:
    broken_project(api_client, namespace)
    create(api_client, EXPORTS, namespace, export_body("e", "broken", "zip"))
    obj = wait_phase(api_client, EXPORTS, namespace, "e", "Failed", timeout=60)
    assert "GeneratedProject 'broken' failed" in obj["status"]["errorMessage"]
    # The fix names a ConfigMap that does not exist yet: the project is at work again (Pending) ...
    custom(api_client).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PROJECTS,
        "broken",
        {"spec": {"sources": [{"configMap": {"name": "files"}}]}},
    )
    obj = wait_phase(api_client, EXPORTS, namespace, "e", "Pending", timeout=30)
    assert condition(obj, "Ready")["message"] == "waiting for GeneratedProject 'broken' to complete"
    assert condition(obj, "Stalled")["status"] == "False"
    assert "errorMessage" not in obj["status"]
    assert (get(api_client, PROJECTS, namespace, "broken") or {})["status"]["phase"] in (
        "Pending",
        "Generating",
    )
    # ... and the export follows it once it completes.
    configmap(api_client, namespace, "files", {"README.md": "# fixed\n"})
    project = wait_phase(api_client, PROJECTS, namespace, "broken", "Completed", timeout=60)
    status = wait_exported(api_client, namespace, "e", project)["status"]
    with zipfile.ZipFile(status["archivePath"]) as z:
        assert z.read("broken/README.md") == b"# fixed\n"


def test_reexport_after_regeneration_and_delete(api_client: client.ApiClient, namespace: str) -> None:
    make_project(api_client, namespace)
    create(api_client, EXPORTS, namespace, export_body("e", "demo", "tar"))
    first = done(api_client, namespace, "e")["status"]
    project = regenerate(api_client, namespace, "demo", [inline_source({"NEW.md": "new\n"})])
    obj = wait_exported(api_client, namespace, "e", project, timeout=60)
    second = obj["status"]
    assert second["archiveSha256"] != first["archiveSha256"]
    assert second["archivePath"] == first["archivePath"]
    names = subprocess.run(
        ["tar", "-tf", second["archivePath"]], check=True, capture_output=True, text=True
    ).stdout.split()
    assert [n for n in names if not n.endswith("/")] == ["demo/NEW.md"]
    custom(api_client).delete_namespaced_custom_object(GROUP, VERSION, namespace, EXPORTS, "e")
    deadline = time.monotonic() + 30
    while get(api_client, EXPORTS, namespace, "e") is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(second["archivePath"]).exists()


@pytest.mark.parametrize("tamper", ["altered", "removed", "symlink"])
def test_tampered_tree_fails_the_export_naming_the_file(
    api_client: client.ApiClient, namespace: str, tamper: str
) -> None:
    project = make_project(api_client, namespace)
    target = Path(project["status"]["outputDirectory"]) / "tree" / "src" / "demo" / "cli.py"
    if tamper == "altered":
        target.write_text("import os; os.system('curl evil')\n")
    elif tamper == "removed":
        target.unlink()
    else:
        target.unlink()
        os.symlink("/etc/passwd", target)
    create(api_client, EXPORTS, namespace, export_body("e", "demo", "zip"))
    obj = wait_phase(api_client, EXPORTS, namespace, "e", "Failed", timeout=60)
    assert "src/demo/cli.py" in obj["status"]["errorMessage"]
    assert "archivePath" not in obj["status"]
    export_dir = Path(project["status"]["outputDirectory"]).parents[4] / "exports" / namespace / "e"
    assert not [p for p in export_dir.rglob("*") if p.is_file()]


def test_restart_during_a_large_export(
    api_client: client.ApiClient, solo_namespace: str, control_plane: Any, tmp_path: Path
) -> None:
    namespace = solo_namespace
    data, log = tmp_path / "data", tmp_path / "operator.log"
    configmap(api_client, namespace, "big", {"copier": "n:\n  type: int\n", "big": BIG_TEMPLATE})
    items = [{"key": "copier", "path": "copier.yml"}, {"key": "big", "path": "big.txt.jinja"}]
    body = project_body(
        "big", [{"template": {"configMap": {"name": "big", "items": items}, "data": {"n": 2000}}}]
    )
    with OperatorProcess(control_plane.kubeconfig, data, log, namespaces=(namespace,)):
        create(api_client, PROJECTS, namespace, body)
        project = wait_phase(api_client, PROJECTS, namespace, "big", "Completed", timeout=180)
    export = export_body("big-tgz", "big", "tar.gz", compressionLevel=9)
    exports = data / "exports" / namespace / "big-tgz"
    op = OperatorProcess(control_plane.kubeconfig, data, log, namespaces=(namespace,)).start()
    try:
        create(api_client, EXPORTS, namespace, export)
        wait_phase(api_client, EXPORTS, namespace, "big-tgz", "Exporting", timeout=60)
        deadline = time.monotonic() + 120
        while not [p for p in exports.rglob(".*.tmp") if p.stat().st_size > 0]:
            assert time.monotonic() < deadline, "the export never started writing its archive"
            time.sleep(0.05)
        # Frozen, the operator is where the kill will find it: mid-write, nothing placed, not done.
        assert op.proc is not None
        op.proc.send_signal(signal.SIGSTOP)
        partial = [p for p in exports.rglob(".*.tmp") if p.stat().st_size > 0]
        placed = [p for p in exports.rglob("*") if p.is_file() and not p.name.startswith(".")]
        phase = (get(api_client, EXPORTS, namespace, "big-tgz") or {}).get("status", {}).get("phase")
        assert partial and not placed and phase == "Exporting", (partial, placed, phase)
    finally:
        op.kill()
    assert not [
        p for p in exports.rglob("*") if p.is_file() and not p.name.startswith(".")
    ]  # nothing half-written in place
    with OperatorProcess(control_plane.kubeconfig, data, log, namespaces=(namespace,)):
        status = done(api_client, namespace, "big-tgz", timeout=240)["status"]
    archive = Path(status["archivePath"])
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == status["archiveSha256"]
    listing = subprocess.run(
        ["tar", "-tzvf", str(archive)], check=True, capture_output=True, text=True
    ).stdout
    assert "big/big.txt" in listing
    assert sorted(p.name for p in archive.parent.iterdir()) == [archive.name]  # no temp files left
    assert status["exportedContentHash"] == project["status"]["contentHash"]


def test_template_symlinks_reach_status_and_archives_and_a_swapped_link_fails(
    api_client: client.ApiClient, namespace: str, git_server: GitHTTPServer, tmp_path: Path
) -> None:
    url = publish_template(
        git_server,
        f"links-{namespace}",
        {
            b"copier.yml": b"_preserve_symlinks: true\n",
            b"README.md": b"# linked\n",
            b"src/pkg/a.py": b"A = 1\n",
        },
        symlinks={"README": "README.md", "pkg": "src/pkg"},
    )
    create(api_client, PROJECTS, namespace, project_body("linked", [{"template": {"url": url}}]))
    project = wait_phase(api_client, PROJECTS, namespace, "linked", "Completed", timeout=90)
    records = {f["path"]: f for f in project["status"]["files"]}
    assert records["pkg"]["type"] == "symlink" and records["pkg"]["target"] == "src/pkg"
    assert records["README"]["target"] == "README.md"
    assert records["pkg"]["sha256"] == hashlib.sha256(b"src/pkg").hexdigest()
    assert "target" not in records["README.md"]

    create(api_client, EXPORTS, namespace, export_body("t", "linked", "tar.gz", repositoryName="linked"))
    archive = Path(done(api_client, namespace, "t")["status"]["archivePath"])
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(dest)], check=True)
    assert os.readlink(dest / "linked" / "pkg") == "src/pkg"
    assert (dest / "linked" / "pkg" / "a.py").read_text() == "A = 1\n"

    link = Path(project["status"]["outputDirectory"]) / "tree" / "pkg"
    link.unlink()
    os.symlink("/var/run/secrets", link)
    create(api_client, EXPORTS, namespace, export_body("z", "linked", "zip"))
    failed = wait_phase(api_client, EXPORTS, namespace, "z", "Failed", timeout=60)
    assert (
        "file pkg changed since generation (symlink points to '/var/run/secrets'"
        in failed["status"]["errorMessage"]
    )
    assert "archivePath" not in failed["status"]
