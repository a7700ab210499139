"""Archives of a generated tree: checked with the tools people will open them with."""

from __future__ import annotations

import calendar
import errno
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import textwrap
import threading
import zipfile
from pathlib import Path

import pytest

import projectgen.export.archive as archive
import projectgen.export.archive.io as archive_io
import projectgen.export.archive.tar as archive_tar
import projectgen.export.archive.zip as archive_zip
from projectgen.cli import main
from projectgen.export.archive import (
    ARCHIVE_TYPES,
    ArchiveError,
    ArchiveMember,
    write_archive,
)
from projectgen.generation.manifest import Manifest, ProjectFile
from projectgen_dev.ci import unavailable


def archive_command(argv: list[str]) -> int:
    return main(["archive", *argv])


TOOL_ENV = {**os.environ, "LC_ALL": "C.UTF-8"}
EXT = {"zip": "zip", "tar": "tar", "tar.gz": "tar.gz"}

LONG_DIR = "deep/" + "/".join(["d" * 60] * 4)
FILES: dict[str, tuple[bytes, bool]] = {
    "README.md": (b"# demo\n\nGenerated.\n" * 40, False),
    "run.sh": (b"#!/bin/sh\necho hello\n", True),
    "src/app.py": (b"def main():\n    return 42\n" * 200, False),
    "src/app-extra.py": (b"x = 1\n", False),
    "src/pkg/__init__.py": (b"", False),
    "src/pkg/data.bin": (hashlib.sha256(b"seed").digest() * 4000, False),
    "src/pkg/random.bin": (os.urandom(3000), False),
    "src/pkg/big.txt": (b"line of text that repeats, with a number: 12345\n" * 40_000, False),  # > 1 MiB
    "src/\u00e9t\u00e9/caf\u00e9.txt": ("\u00e9t\u00e9\n".encode(), False),
    f"{LONG_DIR}/a-file-with-a-long-name-{'n' * 60}.txt": (b"long\n", False),
    "tools/bin/tool": (b"#!/usr/bin/env python3\nprint('hi')\n", True),
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tree(root: Path, files: dict[str, tuple[bytes, bool]] = FILES) -> list[ArchiveMember]:
    members = []
    for rel, (data, executable) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if executable else 0o644)
        members.append(ArchiveMember(rel, len(data), sha(data), executable))
    return members


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, list[ArchiveMember]]:
    root = tmp_path / "tree"
    return root, make_tree(root)


def run(*argv: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=TOOL_ENV, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def need(tool: str) -> None:
    """The real tool that reads our archives back: a missing one fails in CI, where it is installed."""
    if shutil.which(tool) is None:
        unavailable(f"{tool} is not installed")


def extracted(root: Path) -> dict[str, tuple[str, int]]:
    """path -> (sha256, permission bits) of every file below root; fails on links or specials."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            assert stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode), name
            if stat.S_ISDIR(st.st_mode):
                assert stat.S_IMODE(st.st_mode) & 0o777 == 0o755
        for name in filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            out[rel] = (sha(path.read_bytes()), stat.S_IMODE(path.stat().st_mode))
    return out


def entries(path: Path, fmt: str) -> list[tuple[str, int, int, bytes | None]]:
    """(name, mode bits, mtime, content) of every entry, read with the standard library."""
    result: list[tuple[str, int, int, bytes | None]] = []
    if fmt == "zip":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                mode = info.external_attr >> 16
                mtime = calendar.timegm((*info.date_time, 0, 0, 0))
                data = None if info.is_dir() else zf.read(info)
                result.append((info.filename, mode, mtime, data))
        return result
    with tarfile.open(path) as tf:
        for ti in tf:
            assert ti.isdir() or ti.isfile(), ti.name
            assert (ti.uid, ti.gid, ti.uname, ti.gname) == (0, 0, "", "")
            f = tf.extractfile(ti) if ti.isfile() else None
            result.append(
                (ti.name.rstrip("/") + ("/" if ti.isdir() else ""), ti.mode, int(ti.mtime), f and f.read())
            )
    return result


# --- formats open cleanly and hold exactly the members ----------------------------------------


@pytest.mark.parametrize("fmt", ARCHIVE_TYPES)
def test_archive_extracts_to_exactly_the_members(tmp_path: Path, tree, fmt: str) -> None:
    root, members = tree
    (root / "not-in-manifest.txt").write_text("stray\n")
    target = tmp_path / "out" / f"demo.{EXT[fmt]}"

    result = write_archive(root, members, fmt, target, prefix="demo")

    assert result.path == target
    assert result.size == target.stat().st_size
    assert result.sha256 == sha(target.read_bytes())
    dirs = {str(Path("demo", m.path).parent) for m in members}
    all_dirs = {str(p) for d in dirs for p in [Path(d), *Path(d).parents] if str(p) != "."}
    assert result.entries == len(members) + len(all_dirs)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(os.listdir(target.parent)) == [target.name]

    out = tmp_path / "x"
    out.mkdir()
    if fmt == "zip":
        need("unzip")
        run("unzip", "-tq", str(target))
        run(sys.executable, "-m", "zipfile", "-t", str(target))
        run("unzip", "-q", str(target), "-d", str(out))
    else:
        need("tar")
        flag = "-tzf" if fmt == "tar.gz" else "-tf"
        listing = run("tar", flag, str(target)).splitlines()
        assert len(listing) == result.entries
        if fmt == "tar.gz":
            need("gzip")
            run("gzip", "-t", str(target))
        run("tar", "-xf", str(target), "-C", str(out))

    expected = {f"demo/{m.path}": (m.sha256, 0o755 if m.executable else 0o644) for m in members}
    assert extracted(out) == expected


@pytest.mark.parametrize("fmt", ARCHIVE_TYPES)
def test_entries_are_safe_sorted_and_normalised(tmp_path: Path, tree, fmt: str) -> None:
    root, members = tree
    target = tmp_path / f"a.{EXT[fmt]}"
    write_archive(root, reversed(members), fmt, target, prefix="demo", mtime=1_700_000_000)

    listed = entries(target, fmt)
    names = [name for name, *_ in listed]
    assert names[0] == "demo/"
    for name, mode, mtime, _ in listed:
        assert name.startswith("demo/")
        assert not name.startswith("/") and ".." not in name.split("/") and "\\" not in name
        assert mode & 0o7777 in (0o644, 0o755)
        assert stat.S_IFMT(mode) in (0, stat.S_IFREG, stat.S_IFDIR)  # tar keeps the type apart
        if fmt == "zip":
            assert stat.S_IFMT(mode) == (stat.S_IFDIR if name.endswith("/") else stat.S_IFREG)
        assert mtime == 1_700_000_000
    files = [name.removeprefix("demo/") for name, *_ in listed if not name.endswith("/")]
    assert files == sorted((m.path for m in members), key=lambda p: p.encode())
    for name in names:
        if name.endswith("/"):
            continue
        parent = name.rsplit("/", 1)[0] + "/"
        assert names.index(parent) < names.index(name)


@pytest.mark.parametrize("fmt", ARCHIVE_TYPES)
def test_same_input_gives_the_same_bytes(tmp_path: Path, tree, fmt: str, monkeypatch) -> None:
    root, members = tree
    monkeypatch.setattr(archive, "_threads", lambda: 1)
    first = write_archive(root, members, fmt, tmp_path / f"1.{EXT[fmt]}", prefix="demo")
    monkeypatch.setattr(archive, "_threads", lambda: 4)
    second = write_archive(root, list(reversed(members)), fmt, tmp_path / f"2.{EXT[fmt]}", prefix="demo")
    assert first.sha256 == second.sha256
    assert (tmp_path / f"1.{EXT[fmt]}").read_bytes() == (tmp_path / f"2.{EXT[fmt]}").read_bytes()


@pytest.mark.parametrize("fmt", ARCHIVE_TYPES)
def test_source_date_epoch_changes_only_timestamps(tmp_path: Path, tree, fmt: str, monkeypatch) -> None:
    root, members = tree
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1600000000")
    a = write_archive(root, members, fmt, tmp_path / f"a.{EXT[fmt]}", prefix="demo")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    b = write_archive(root, members, fmt, tmp_path / f"b.{EXT[fmt]}", prefix="demo")
    assert a.sha256 != b.sha256
    ea, eb = entries(a.path, fmt), entries(b.path, fmt)
    assert [(n, m, d) for n, m, _, d in ea] == [(n, m, d) for n, m, _, d in eb]
    assert {t for *_, t, _ in ea} == {1600000000}
    assert {t for *_, t, _ in eb} == {1700000000}


def test_default_mtime_is_1980_and_gzip_header_is_bare(tmp_path: Path, tree, monkeypatch) -> None:
    root, members = tree
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    result = write_archive(root, members, "tar.gz", tmp_path / "a.tar.gz", prefix="demo")
    header = result.path.read_bytes()[:10]
    assert header[:4] == b"\x1f\x8b\x08\x00"  # deflate, no FNAME/FEXTRA/FCOMMENT flags
    assert header[4:8] == b"\0\0\0\0"  # mtime 0
    assert {t for *_, t, _ in entries(result.path, "tar.gz")} == {315532800}


# --- what goes wrong ----------------------------------------------------------------------------


def assert_nothing_left(target: Path) -> None:
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir()] == []


@pytest.mark.parametrize("fmt", ARCHIVE_TYPES)
def test_symlink_in_place_of_a_member_is_refused(tmp_path: Path, tree, fmt: str) -> None:
    root, members = tree
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"x = 1\n")  # same size and content as the member it replaces
    (root / "src/app-extra.py").unlink()
    (root / "src/app-extra.py").symlink_to(secret)
    target = tmp_path / "out" / f"a.{EXT[fmt]}"
    target.parent.mkdir()
    with pytest.raises(ArchiveError, match=r"src/app-extra\.py is a symlink"):
        write_archive(root, members, fmt, target, prefix="demo")
    assert_nothing_left(target)


@pytest.mark.parametrize("fmt", ARCHIVE_TYPES)
def test_symlinked_parent_directory_is_refused(tmp_path: Path, tree, fmt: str) -> None:
    root, members = tree
    outside = tmp_path / "outside"
    shutil.copytree(root / "src/pkg", outside)  # identical content: only the link is wrong
    shutil.rmtree(root / "src/pkg")
    (root / "src/pkg").symlink_to(outside)
    target = tmp_path / "out" / f"a.{EXT[fmt]}"
    target.parent.mkdir()
    with pytest.raises(ArchiveError, match=r"file src/pkg/\S+: its parent src/pkg is a symlink"):
        write_archive(root, members, fmt, target, prefix="demo")
    assert_nothing_left(target)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("same-size", r"file src/app\.py changed since generation \(sha256 mismatch\); regenerate"),
        ("resize", r"file src/app\.py changed since generation \(size mismatch"),
        ("remove", r"file src/app\.py changed since generation \(file is missing\)"),
        ("big", r"file src/pkg/big\.txt changed since generation \(sha256 mismatch\)"),
    ],
)
@pytest.mark.parametrize("fmt", ARCHIVE_TYPES)
def test_file_changed_after_the_manifest_fails(
    tmp_path: Path, tree, fmt: str, change: str, message: str
) -> None:
    root, members = tree
    app = root / "src/app.py"
    if change == "same-size":
        data = bytearray(app.read_bytes())
        data[-2] ^= 1
        app.write_bytes(bytes(data))
    elif change == "resize":
        app.write_bytes(app.read_bytes() + b"# more\n")
    elif change == "remove":
        app.unlink()
    else:
        big = root / "src/pkg/big.txt"
        data = bytearray(big.read_bytes())
        data[-3] ^= 1  # in the last block, after most of the file went into the archive
        big.write_bytes(bytes(data))
    target = tmp_path / "out" / f"a.{EXT[fmt]}"
    with pytest.raises(ArchiveError, match=message):
        write_archive(root, members, fmt, target, prefix="demo")
    assert_nothing_left(target)


@pytest.mark.parametrize("fmt", ARCHIVE_TYPES)
def test_disk_full_fails_cleanly(tmp_path: Path, tree, fmt: str, monkeypatch) -> None:
    root, members = tree
    written = 0

    def write_all(fd: int, data: bytes) -> None:
        nonlocal written
        written += len(data)
        if written > 5_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        os.write(fd, data)

    monkeypatch.setattr(archive_io, "_write_all", write_all)
    threads = threading.active_count()
    target = tmp_path / "out" / f"a.{EXT[fmt]}"
    with pytest.raises(OSError, match="No space left"):
        write_archive(root, members, fmt, target, prefix="demo")
    assert_nothing_left(target)
    assert threading.active_count() == threads


def test_failed_export_keeps_the_previous_archive(tmp_path: Path, tree) -> None:
    root, members = tree
    target = tmp_path / "out" / "a.zip"
    first = write_archive(root, members, "zip", target, prefix="demo")
    (root / "run.sh").write_bytes(b"#!/bin/sh\necho HELLO\n")
    with pytest.raises(ArchiveError, match=r"run\.sh changed"):
        write_archive(root, members, "zip", target, prefix="demo")
    assert sha(target.read_bytes()) == first.sha256
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.zip"]


def test_special_file_is_refused_without_hanging(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    os.mkfifo(root / "pipe")
    target = tmp_path / "out" / "a.tar"
    with pytest.raises(ArchiveError, match="file pipe is not a regular file"):
        write_archive(root, [ArchiveMember("pipe", 0, None, False)], "tar", target, prefix="demo")
    assert_nothing_left(target)


@pytest.mark.parametrize(
    "path",
    ["../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "a/./b", "a/", "", "a\\b", "a\x00b", "a\nb", "C:x"],
)
def test_unsafe_member_paths_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(ArchiveError, match="member path"):
        write_archive(tmp_path, [ArchiveMember(path, 0, None, False)], "zip", tmp_path / "a.zip", prefix="p")
    assert not (tmp_path / "a.zip").exists()


@pytest.mark.parametrize("prefix", ["", ".", "..", "a/b", "a\\b", "a\x00", "x" * 256])
def test_unsafe_prefix_is_refused(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ArchiveError, match="archive prefix"):
        write_archive(tmp_path, [], "tar", tmp_path / "a.tar", prefix=prefix)


def test_bad_member_lists_are_refused(tmp_path: Path, tree, monkeypatch) -> None:
    root, members = tree
    with pytest.raises(ArchiveError, match="listed twice"):
        write_archive(root, [*members, members[0]], "tar", tmp_path / "a.tar", prefix="demo")
    clash = ArchiveMember("src", 0, None, False)
    with pytest.raises(ArchiveError, match="src is listed both as a file and as a directory"):
        write_archive(root, [*members, clash], "tar", tmp_path / "a.tar", prefix="demo")
    bad_hash = ArchiveMember("run.sh", members[1].size, "ABC", True)
    with pytest.raises(ArchiveError, match="sha256"):
        write_archive(root, [bad_hash], "tar", tmp_path / "a.tar", prefix="demo")
    with pytest.raises(ArchiveError, match="level"):
        write_archive(root, members, "zip", tmp_path / "a.zip", prefix="demo", level=10)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ArchiveError, match="SOURCE_DATE_EPOCH"):
        write_archive(root, members, "tar", tmp_path / "a.tar", prefix="demo")
    assert list(tmp_path.glob("a.*")) == [] and list(tmp_path.glob(".a.*")) == []


def test_windows_reserved_names_warn_in_zip_only(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    members = make_tree(
        root, {"docs/con.txt": (b"c", False), "aux/x": (b"x", False), "ok.txt": (b"k", False)}
    )
    result = write_archive(root, members, "zip", tmp_path / "a.zip", prefix="demo")
    assert len(result.warnings) == 2
    assert any("docs/con.txt" in w and "reserved device name" in w for w in result.warnings)
    assert any("aux/x" in w for w in result.warnings)
    assert write_archive(root, members, "tar", tmp_path / "a.tar", prefix="demo").warnings == []


# --- format details -----------------------------------------------------------------------------


def test_zip_details(tmp_path: Path, tree) -> None:
    root, members = tree
    result = write_archive(root, members, "zip", tmp_path / "a.zip", prefix="demo")
    with zipfile.ZipFile(result.path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
    for info in infos.values():
        assert info.create_system == 3
        assert info.extra == b""
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
    assert infos["demo/src/app.py"].compress_type == zipfile.ZIP_DEFLATED
    assert infos["demo/src/pkg/random.bin"].compress_type == zipfile.ZIP_STORED  # deflate did not help
    assert infos["demo/src/pkg/big.txt"].flag_bits & 0x08  # streamed, with a data descriptor
    assert infos["demo/src/\u00e9t\u00e9/caf\u00e9.txt"].flag_bits & 0x800
    assert infos["demo/src/"].external_attr == ((stat.S_IFDIR | 0o755) << 16) | 0x10

    stored = write_archive(root, members, "zip", tmp_path / "s.zip", prefix="demo", level=0)
    with zipfile.ZipFile(stored.path) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
        assert zf.testzip() is None


def test_zip64_records_open_everywhere(tmp_path: Path, tree, monkeypatch) -> None:
    """Zip64 is what files of 2 GiB and more, and archives of 65,536 entries, need: forced small here."""
    need("unzip")
    root, members = tree
    monkeypatch.setattr(archive_zip, "_ZIP64_LIMIT", 1000)
    monkeypatch.setattr(archive_zip, "_ZIP_COUNT_LIMIT", 5)
    result = write_archive(root, members, "zip", tmp_path / "a.zip", prefix="demo")
    data = result.path.read_bytes()
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data
    run("unzip", "-tq", str(result.path))
    run(sys.executable, "-m", "zipfile", "-t", str(result.path))
    with zipfile.ZipFile(result.path) as zf:
        for m in members:
            assert sha(zf.read(f"demo/{m.path}")) == m.sha256


def test_tar_headers_match_tarfile_and_long_paths_use_pax_only_when_needed(tmp_path: Path, tree) -> None:
    root, members = tree
    result = write_archive(root, members, "tar", tmp_path / "a.tar", prefix="demo")
    raw = result.path.read_bytes()
    with tarfile.open(result.path) as tf:
        infos = tf.getmembers()
    pax = {i.name.rstrip("/") for i in infos if i.pax_headers}
    for info in infos:
        name = info.name.rstrip("/") + ("/" if info.isdir() else "")
        raw_name = name.encode()
        fits_ustar = raw_name.isascii() and (
            len(raw_name) <= 100 or archive_tar._ustar_split(raw_name) is not None
        )
        assert (info.name.rstrip("/") in pax) == (not fits_ustar), name
    assert f"demo/{LONG_DIR}/a-file-with-a-long-name-{'n' * 60}.txt" in pax  # over 255 bytes
    assert "demo/src/été/café.txt" in pax  # not ASCII
    assert f"demo/{LONG_DIR.rsplit('/', 1)[0]}" not in pax  # 193 bytes: ustar's prefix field
    assert raw.count(b"././@PaxHeader") == len(pax)
    # Each ustar header built by hand is the one tarfile would build.
    for info in infos:
        if info.pax_headers:
            continue
        ref = tarfile.TarInfo(info.name)
        ref.type, ref.mode, ref.size, ref.mtime = info.type, info.mode, info.size, info.mtime
        ref.uname = ref.gname = ""
        fmt = tarfile.PAX_FORMAT if len(info.name.encode()) <= 100 else tarfile.USTAR_FORMAT
        assert raw[info.offset : info.offset + 512] == ref.tobuf(fmt, "utf-8", "strict"), info.name
    assert len(raw) % tarfile.RECORDSIZE == 0


def test_empty_member_list_gives_just_the_top_folder(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    for fmt in ARCHIVE_TYPES:
        result = write_archive(tmp_path / "tree", [], fmt, tmp_path / f"e.{EXT[fmt]}", prefix="demo")
        assert result.entries == 1
        assert [n for n, *_ in entries(result.path, fmt)] == ["demo/"]


# --- the offline command -----------------------------------------------------------------------


def write_manifest(path: Path, members: list[ArchiveMember]) -> None:
    files = [
        ProjectFile(m.path, m.path.rsplit("/", 1)[-1], "text", m.size, m.sha256 or "", m.executable)
        for m in members
    ]
    Manifest.build(files).dump(path)


def test_offline_command_with_manifest(tmp_path: Path, tree, capsys) -> None:
    root, members = tree
    manifest = tmp_path / "manifest.json"
    write_manifest(manifest, members)
    (root / "stray.txt").write_text("not in the manifest\n")
    out = tmp_path / "out" / "demo.zip"

    assert (
        archive_command(
            ["--format", "zip", "--manifest", str(manifest), "--prefix", "demo", "-o", str(out), str(root)]
        )
        == 0
    )

    line = capsys.readouterr().out.strip()
    assert (
        line
        == f"{out} size={out.stat().st_size} sha256={sha(out.read_bytes())} entries={line.split('entries=')[1]}"
    )
    with zipfile.ZipFile(out) as zf:
        assert sorted(n for n in zf.namelist() if not n.endswith("/")) == sorted(
            f"demo/{m.path}" for m in members
        )

    (root / "src/app.py").write_bytes(b"def main():\n    return 43\n" * 200)
    out.unlink()
    assert archive_command(["--format", "zip", "--manifest", str(manifest), "-o", str(out), str(root)]) == 1
    err = capsys.readouterr().err
    assert "error: file src/app.py changed since generation (sha256 mismatch)" in err
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_offline_command_without_manifest(tmp_path: Path, tree, capsys) -> None:
    root, members = tree
    out = root / "self.tar.gz"  # inside DIR: must not pack itself
    assert archive_command(["--format", "tar.gz", "-o", str(out), str(root)]) == 0
    again = archive_command(["--format", "tar.gz", "-o", str(out), str(root)])
    assert again == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == lines[1]  # the same bytes the second time, the first archive left out
    listed = entries(out, "tar.gz")
    assert {n for n, *_ in listed if not n.endswith("/")} == {f"tree/{m.path}" for m in members}
    by_name = {n: (mode, d) for n, mode, _, d in listed}
    assert by_name["tree/run.sh"][0] == 0o755 and by_name["tree/README.md"][0] == 0o644

    (root / "src/link.py").symlink_to("app.py")  # inside DIR: archived as a link
    linked = tmp_path / "linked.tar"
    assert archive_command(["--format", "tar", "-o", str(linked), str(root)]) == 0
    with tarfile.open(linked) as tf:
        assert tf.getmember("tree/src/link.py").linkname == "app.py"
    (root / "src/leak.py").symlink_to("../../outside.py")
    bad = tmp_path / "bad.tar"
    assert archive_command(["--format", "tar", "-o", str(bad), str(root)]) == 1
    assert "symlink 'src/leak.py' -> '../../outside.py' points outside the project" in capsys.readouterr().err
    assert not bad.exists()


def test_offline_command_as_a_module(tmp_path: Path, tree) -> None:
    root, _ = tree
    out = tmp_path / "demo.tar"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "projectgen",
            "archive",
            "--format",
            "tar",
            "--prefix",
            "demo",
            "-o",
            str(out),
            str(root),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{out} size=")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "projectgen",
            "archive",
            "--format",
            "tar",
            "-o",
            str(out),
            str(tmp_path / "nope"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and "is not a directory" in proc.stderr


# --- memory ------------------------------------------------------------------------------------

MEMORY_PROBE = textwrap.dedent(
    """
    import hashlib, sys
    from pathlib import Path
    from projectgen.export.archive import ArchiveMember, write_archive
    root, size = Path(sys.argv[1]), int(sys.argv[2])
    h = hashlib.sha256()
    with open(root / "blob.bin", "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    member = ArchiveMember("blob.bin", size, h.hexdigest(), False)
    for fmt in ("tar", "tar.gz", "zip"):
        write_archive(root, [member], fmt, root.parent / f"out.{fmt}", prefix="demo")
    """
)


LAUNCHER = textwrap.dedent(
    """
    import resource, subprocess, sys
    subprocess.run([sys.executable, "-c", *sys.argv[1:]], check=True)
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    """
)


def peak_rss_mb(root: Path, size: int) -> float:
    """Peak RSS of a process archiving `root`, as getrusage(RUSAGE_CHILDREN) of its parent sees it.

    The parent is a small launcher, not pytest: a child's ru_maxrss starts at its parent's RSS
    (fork, or vfork, then exec), so measured from pytest it would be pytest's size.
    """
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCHER, MEMORY_PROBE, str(root), str(size)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout) / 1024


def test_memory_does_not_grow_with_file_size(tmp_path: Path) -> None:
    small, large = tmp_path / "small" / "tree", tmp_path / "large" / "tree"
    small.mkdir(parents=True)
    large.mkdir(parents=True)
    (small / "blob.bin").write_bytes(b"tiny\n")
    size = 200 * 1024 * 1024
    with open(large / "blob.bin", "wb") as f:
        # Mostly a hole (zeros, quick to deflate) with a MiB of random bytes every 16 MiB.
        f.truncate(size)
        for offset in range(0, size, 16 << 20):
            f.seek(offset)
            f.write(os.urandom(1 << 20))
    baseline = peak_rss_mb(small, 5)
    peak = peak_rss_mb(large, size)
    assert peak < 100, f"peak RSS {peak:.0f} MB archiving a 200 MiB file"
    assert peak - baseline < 40, f"peak RSS grew from {baseline:.0f} MB to {peak:.0f} MB"
    with tarfile.open(large.parent / "out.tar") as tf:
        info = tf.getmember("demo/blob.bin")
        assert info.size == size


def test_zip_large_file_round_trip(tmp_path: Path) -> None:
    """Several blocks deflated in parallel must form one valid stream with the right CRC."""
    root = tmp_path / "tree"
    data = (b"".join(os.urandom(64) + b"text " * 100 for _ in range(3000)))[: 3 * (1 << 20) + 12345]
    members = make_tree(root, {"blob.bin": (data, False)})
    result = write_archive(root, members, "zip", tmp_path / "a.zip", prefix="demo")
    with zipfile.ZipFile(result.path) as zf:
        assert zf.read("demo/blob.bin") == data
    with tarfile.open(write_archive(root, members, "tar.gz", tmp_path / "a.tgz", prefix="demo").path) as tf:
        f = tf.extractfile("demo/blob.bin")
        assert f is not None and f.read() == data
