"""Symlinks of a project in zip, tar and tar.gz: real unzip and tar recreate them as links."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
from test_archive import TOOL_ENV, make_tree, need, run

from projectgen.export.archive import ARCHIVE_TYPES, ArchiveError, ArchiveMember, write_archive
from projectgen.generation.links import LinkError, Tree

FILES = {
    "README.md": (b"# demo\n", False),
    "src/pkg/__init__.py": (b"VERSION = 1\n", False),
    "bin/run": (b"#!/bin/sh\necho run\n", True),
}
LINKS = {
    "README": "README.md",  # to a file
    "pkg": "src/pkg",  # to a directory
    "docs/readme.md": "../README.md",  # up one level, still inside
    "latest": "README",  # a link to a link
}
EXT = {"zip": "zip", "tar": "tar", "tar.gz": "tar.gz"}


def link_member(path: str, target: str) -> ArchiveMember:
    raw = target.encode()
    return ArchiveMember(path, len(raw), hashlib.sha256(raw).hexdigest(), target=target)


def make_links(root: Path, links: dict[str, str]) -> list[ArchiveMember]:
    members = []
    for path, target in links.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / path)
        members.append(link_member(path, target))
    return members


@pytest.fixture
def linked(tmp_path: Path) -> tuple[Path, list[ArchiveMember]]:
    root = tmp_path / "tree"
    members = make_tree(root, FILES)
    return root, members + make_links(root, LINKS)


def extract(archive: Path, fmt: str, dest: Path) -> Path:
    dest.mkdir()
    if fmt == "zip":
        run("unzip", "-q", str(archive), "-d", str(dest))
    else:
        run("tar", "-xf", str(archive), "-C", str(dest))
    return dest / "demo"


@pytest.mark.parametrize("fmt", ARCHIVE_TYPES)
def test_links_are_recreated_by_unzip_and_tar(tmp_path: Path, linked, fmt: str) -> None:
    need("unzip" if fmt == "zip" else "tar")
    root, members = linked
    target = tmp_path / f"demo.{EXT[fmt]}"
    write_archive(root, members, fmt, target, prefix="demo")
    out = extract(target, fmt, tmp_path / "x")
    for path, link in LINKS.items():
        assert (out / path).is_symlink(), path
        assert os.readlink(out / path) == link
    assert (out / "pkg" / "__init__.py").read_bytes() == b"VERSION = 1\n"  # through the directory link
    assert (out / "latest").read_bytes() == b"# demo\n"  # through the chain
    assert (out / "docs/readme.md").read_bytes() == b"# demo\n"


def test_zip_link_entries_as_info_zip_writes_them(tmp_path: Path, linked) -> None:
    need("unzip")
    root, members = linked
    target = tmp_path / "demo.zip"
    write_archive(root, members, "zip", target, prefix="demo")
    listing = run("unzip", "-Z", str(target))
    lines = {line.split()[-1]: line for line in listing.splitlines() if line.startswith(("l", "-", "d"))}
    assert lines["demo/pkg"].startswith("lrwxrwxrwx"), lines["demo/pkg"]
    assert lines["demo/README"].startswith("lrwxrwxrwx")
    assert lines["demo/README.md"].startswith("-rw-r--r--")
    with zipfile.ZipFile(target) as zf:
        info = zf.getinfo("demo/docs/readme.md")
        assert info.external_attr >> 16 == 0o120777
        assert zf.read(info) == b"../README.md"


@pytest.mark.parametrize("fmt", ["tar", "tar.gz"])
def test_tar_link_entries(tmp_path: Path, linked, fmt: str) -> None:
    root, members = linked
    target = tmp_path / f"demo.{EXT[fmt]}"
    write_archive(root, members, fmt, target, prefix="demo")
    listing = run("tar", "-tvf", str(target))
    assert any(
        line.startswith("lrwxrwxrwx") and "demo/pkg -> src/pkg" in line for line in listing.splitlines()
    )
    with tarfile.open(target) as tf:
        info = tf.getmember("demo/latest")
        assert (info.type, info.linkname, info.mode, info.size) == (tarfile.SYMTYPE, "README", 0o777, 0)
        assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
        # the standard library's own safety filter (PEP 706) accepts every entry
        tf.extractall(tmp_path / "filtered", filter="data")
    assert os.readlink(tmp_path / "filtered/demo/pkg") == "src/pkg"


@pytest.mark.parametrize("fmt", ARCHIVE_TYPES)
def test_same_links_give_the_same_bytes_and_a_new_target_other_bytes(
    tmp_path: Path, linked, fmt: str
) -> None:
    root, members = linked
    a = write_archive(root, members, fmt, tmp_path / f"a.{EXT[fmt]}", prefix="demo")
    b = write_archive(root, members, fmt, tmp_path / f"b.{EXT[fmt]}", prefix="demo")
    assert a.sha256 == b.sha256
    assert (tmp_path / f"a.{EXT[fmt]}").read_bytes() == (tmp_path / f"b.{EXT[fmt]}").read_bytes()
    os.unlink(root / "latest")
    os.symlink("README.md", root / "latest")
    changed = [m if m.path != "latest" else link_member("latest", "README.md") for m in members]
    c = write_archive(root, changed, fmt, tmp_path / f"c.{EXT[fmt]}", prefix="demo")
    assert c.sha256 != a.sha256


@pytest.mark.parametrize("fmt", ARCHIVE_TYPES)
def test_link_swapped_on_disk_fails_naming_it(tmp_path: Path, linked, fmt: str) -> None:
    root, members = linked
    target = tmp_path / f"demo.{EXT[fmt]}"
    os.unlink(root / "pkg")
    os.symlink("/etc", root / "pkg")  # swapped after generation
    with pytest.raises(ArchiveError, match=r"file pkg changed since generation \(symlink points to '/etc'"):
        write_archive(root, members, fmt, target, prefix="demo")
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    os.unlink(root / "pkg")
    (root / "pkg").write_bytes(b"src/pkg")  # a file of the same bytes in its place
    with pytest.raises(ArchiveError, match=r"file pkg changed since generation \(a symlink in the manifest"):
        write_archive(root, members, fmt, target, prefix="demo")
    assert not target.exists()


@pytest.mark.parametrize(
    ("links", "message"),
    [
        ({"leak": "/etc/passwd"}, r"symlink leak has an absolute target"),
        ({"leak": "../../etc/passwd"}, r"symlink 'leak' -> '../../etc/passwd' points outside the project"),
        (
            {"a": "b", "b": "src/../.."},
            r"symlink 'a' -> 'b' points outside the project \(through symlink 'b' -> 'src/../..'\)",
        ),
        ({"d": "missing.txt"}, r"symlink 'd' -> 'missing.txt' dangles"),
        ({"e": "d", "d": "missing.txt"}, r"symlink 'd' -> 'missing.txt' dangles"),
    ],
)
def test_links_leaving_the_members_are_refused(tmp_path: Path, links: dict[str, str], message: str) -> None:
    root = tmp_path / "tree"
    members = make_tree(root, FILES) + make_links(root, links)
    for fmt in ARCHIVE_TYPES:
        target = tmp_path / f"demo.{EXT[fmt]}"
        with pytest.raises(ArchiveError, match=message):
            write_archive(root, members, fmt, target, prefix="demo")
        assert not target.exists()


def test_link_record_must_match_its_target(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    members = make_tree(root, FILES)
    os.symlink("README.md", root / "r")
    bad = ArchiveMember("r", 3, None, target="README.md")
    with pytest.raises(ArchiveError, match=r"symlink r: recorded size or sha256 is not that of its target"):
        write_archive(root, [*members, bad], "tar", tmp_path / "x.tar", prefix="demo")


def test_unzip_refuses_nothing_and_writes_nothing_outside(tmp_path: Path, linked) -> None:
    """Extracting with unzip leaves everything below the destination (no link followed out)."""
    need("unzip")
    root, members = linked
    target = tmp_path / "demo.zip"
    write_archive(root, members, "zip", target, prefix="demo")
    dest = tmp_path / "x"
    extract(target, "zip", dest)
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            assert os.path.commonpath([str(dest), os.path.realpath(full)]) == str(dest), full
    proc = subprocess.run(["unzip", "-tq", str(target)], env=TOOL_ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# -- the resolver, on its own --------------------------------------------------------------------


def resolve(links: dict[str, str], files: tuple[str, ...] = ("a.txt", "d/f.txt"), link: str | None = None):
    tree = Tree.of([*((f, None) for f in files), *links.items()])
    return tree.resolve(link or next(iter(links)))


def test_resolver_follows_links_as_the_kernel_does() -> None:
    assert resolve({"l": "a.txt"}) == ("a.txt", False)
    assert resolve({"l": "d"}) == ("d", True)
    assert resolve({"d/l": "../a.txt"}) == ("a.txt", False)
    assert resolve({"d/l": ".."}) == ("", True)  # the project root itself
    assert resolve({"l": "./d//f.txt"}) == ("d/f.txt", False)
    # `..` after a link applies to where the link led, not to the text before it
    assert resolve({"x": "m/l", "m/l": "../d"}, link="x") == ("d", True)
    assert resolve({"l": "x/../a.txt", "x": "d"}, link="l") == ("a.txt", False)


@pytest.mark.parametrize(
    ("links", "message"),
    [
        # lexically inside (`s/..` is the root), but `s` is the root itself, so `..` leaves it
        ({"l": "s/../a.txt", "s": "."}, "points outside the project"),
        ({"l": "l"}, "loop of links"),
        ({"l": "m", "m": "l"}, "loop of links"),
        ({"l": "a.txt/"}, "is a file, not a directory"),
        ({"l": "a.txt/x"}, "is a file, not a directory"),
        ({"l": "m", "m": "/etc"}, r"leads to symlink 'm' -> '/etc', which has an absolute target"),
        ({"l": ""}, "empty target"),
    ],
)
def test_resolver_refuses(links: dict[str, str], message: str) -> None:
    with pytest.raises(LinkError, match=message):
        resolve(links)
