"""Storage: layout, atomic placing, swap and clean-up in the operator's volume."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from projectgen.generation.manifest import Manifest, ProjectFile
from projectgen.storage import MANIFEST, TREE, Storage

NS, NAME, UID = "team-a", "my-project", "0b9c1f6e-1111-4c4c-9d9d-123456789abc"


def staged(storage: Storage, content: str) -> Path:
    path = storage.staging_root / f"gp-{content}"
    (path / TREE).mkdir(parents=True)
    (path / TREE / "a.txt").write_text(content)
    Manifest.build([ProjectFile("a.txt", "a.txt", "text", len(content), "0" * 64)]).dump(path / MANIFEST)
    return path


def test_layout_and_staging(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data")
    assert sorted(os.listdir(tmp_path / "data")) == [".staging", "exports", "projects"]
    with storage.staging("gp") as work:
        assert work.parent == storage.staging_root and work.name.startswith("gp-")
        (work / "tree").mkdir()
        (work / "tree" / "x").write_text("x")
    assert not work.exists()
    with pytest.raises(RuntimeError), storage.staging("gp") as work:
        raise RuntimeError
    assert not work.exists()
    assert os.listdir(storage.staging_root) == []


def test_place_swap_and_keep_same_key(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    with storage.staging("gp") as work:
        (work / TREE).mkdir()
        (work / TREE / "a.txt").write_text("one")
        Manifest.build([]).dump(work / MANIFEST)
        first = storage.place_project(work, NS, NAME, UID, "k1")
    assert first == tmp_path / "projects" / NS / NAME / UID / "k1"
    assert (first / TREE / "a.txt").read_text() == "one"
    assert Manifest.load(first / MANIFEST).total_files == 0
    inode = first.stat().st_ino

    again = storage.place_project(staged(storage, "other"), NS, NAME, UID, "k1")
    assert again == first and first.stat().st_ino == inode
    assert (first / TREE / "a.txt").read_text() == "one"

    second = storage.place_project(staged(storage, "two"), NS, NAME, UID, "k2")
    assert os.listdir(second.parent) == ["k2"]
    assert second == tmp_path / "projects" / NS / NAME / UID / "k2"
    assert os.listdir(storage.staging_root) == []


def test_recreated_resource_never_sees_old_files(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.place_project(staged(storage, "old"), NS, NAME, UID, "k")
    new = storage.place_project(staged(storage, "new"), NS, NAME, "new-uid", "k")
    assert os.listdir(new.parent.parent) == ["new-uid"]
    assert not (tmp_path / "projects" / NS / NAME / UID).exists()
    assert (new / TREE / "a.txt").read_text() == "new"


def test_place_refuses_foreign_or_incomplete_dirs(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / TREE).mkdir(parents=True)
    (elsewhere / MANIFEST).write_text("{}")
    with pytest.raises(ValueError, match="not a staging directory"):
        storage.place_project(elsewhere, NS, NAME, UID, "k")
    incomplete = storage.staging_root / "gp-x"
    incomplete.mkdir()
    with pytest.raises(ValueError, match="must hold"):
        storage.place_project(incomplete, NS, NAME, UID, "k")


def test_remove_project_and_export(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.place_project(staged(storage, "a"), NS, NAME, UID, "k")
    storage.place_project(staged(storage, "b"), NS, "other", UID, "k")
    archive = storage.export_path(NS, NAME, UID, "repo.tar.gz")
    assert archive == tmp_path / "exports" / NS / NAME / UID / "repo.tar.gz" and archive.parent.is_dir()
    archive.write_bytes(b"x")

    storage.remove_project(NS, NAME, "some-other-uid")
    assert (tmp_path / "projects" / NS / NAME / UID / "k" / MANIFEST).is_file()
    storage.remove_project(NS, NAME, UID)
    assert not (tmp_path / "projects" / NS / NAME).exists()
    assert (tmp_path / "projects" / NS / "other").exists()
    storage.remove_project(NS, "other")
    assert not (tmp_path / "projects" / NS).exists()
    storage.remove_project(NS, "never-existed")

    storage.remove_export(NS, NAME)
    assert not archive.exists() and not (tmp_path / "exports" / NS).exists()
    assert os.listdir(storage.staging_root) == []


def test_clean_staging(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    staged(storage, "debris")
    (storage.staging_root / "trash-1234").mkdir()
    (storage.staging_root / "file").write_text("x")
    os.symlink("/", storage.staging_root / "link")
    assert storage.clean_staging() == 4
    assert os.listdir(storage.staging_root) == []
    assert Path("/").exists()


@pytest.mark.parametrize(
    ("namespace", "name", "uid"),
    [
        ("..", NAME, UID),
        (NS, "..", UID),
        (NS, NAME, ".."),
        ("Team", NAME, UID),
        (NS, "a/b", UID),
        (NS, NAME, "a/b"),
        ("", NAME, UID),
        (NS, NAME, "x" * 200),
    ],
)
def test_names_are_safe_segments(tmp_path: Path, namespace: str, name: str, uid: str) -> None:
    storage = Storage(tmp_path)
    with pytest.raises(ValueError, match="invalid"):
        storage.remove_project(namespace, name, uid)
    with pytest.raises(ValueError, match="invalid"):
        storage.export_path(namespace, name, uid, "a.zip")


@pytest.mark.parametrize("filename", ["..", "a/b", "", "x" * 256, "a\x00"])
def test_export_file_name_is_safe(tmp_path: Path, filename: str) -> None:
    with pytest.raises(ValueError, match="invalid file name"):
        Storage(tmp_path).export_path(NS, NAME, UID, filename)


def test_discard_only_inside_root(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data")
    outside = tmp_path / "keep"
    outside.mkdir()
    with pytest.raises(ValueError):
        storage.discard(outside)
    with pytest.raises(ValueError):
        storage.discard(storage.projects)
    with pytest.raises(ValueError):
        storage.discard(tmp_path / "data" / "projects" / ".." / ".." / "keep")
    assert outside.is_dir()
    storage.discard(storage.projects / "missing")
