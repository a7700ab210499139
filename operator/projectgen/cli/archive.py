"""`projectgen archive`: pack a directory as the operator packs an export, without a cluster.

    projectgen archive --format zip|tar|tar.gz [--manifest FILE] [--prefix NAME] [--level N] -o OUT DIR

With --manifest, the archive holds exactly the manifest's files, each checked against its
recorded size and SHA-256, as in the operator. Without it, every regular file below DIR goes in
(empty directories do not), a symlink goes in as a link when it resolves inside DIR (it is never
followed; one that leaves DIR or dangles is an error, as in a project), and a special file is
an error. Prints one line:
`OUT size=N sha256=HEX entries=N`. On error: a message on stderr, exit status 1, no OUT.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import stat
from pathlib import Path

from projectgen.cli.output import CommandError, warn
from projectgen.export.archive import (
    ARCHIVE_TYPES,
    DEFAULT_LEVEL,
    ArchiveError,
    ArchiveMember,
    validate_prefix,
    write_archive,
)
from projectgen.generation.manifest import Manifest


def walk_members(root: Path, *, skip: Path | None = None) -> list[ArchiveMember]:
    """Every regular file (with size and the owner's execute bit) and symlink below `root`, sorted.

    `skip` (the output archive, when it is inside `root`) is left out. The SHA-256 is not
    computed here: `write_archive` reads each file once, and checks the size it recorded.
    """
    members: list[ArchiveMember] = []
    skip_id = None
    if skip is not None:
        try:
            st = skip.stat()
            skip_id = (st.st_dev, st.st_ino)
        except OSError:
            pass

    def walk(directory: Path, rel: str) -> None:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = f"{rel}{entry.name}"
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(entry.path)
                raw = target.encode("utf-8", "surrogateescape")
                members.append(ArchiveMember(path, len(raw), hashlib.sha256(raw).hexdigest(), target=target))
            elif stat.S_ISDIR(st.st_mode):
                walk(Path(entry.path), f"{path}/")
            elif stat.S_ISREG(st.st_mode):
                if (st.st_dev, st.st_ino) == skip_id:
                    continue
                members.append(ArchiveMember(path, st.st_size, None, bool(st.st_mode & stat.S_IXUSR)))
            else:
                raise ArchiveError(f"{path} is not a regular file, directory or symlink; remove it")

    walk(root, "")
    return members


def _manifest_members(path: Path) -> list[ArchiveMember]:
    try:
        manifest = Manifest.load(path)
    except OSError as exc:
        raise ArchiveError(f"cannot read manifest {path}: {exc.strerror or exc}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        # json.JSONDecodeError is a ValueError; a record with missing or unknown keys a TypeError.
        raise ArchiveError(f"manifest {path} is not a valid manifest.json: {exc}") from exc
    return [ArchiveMember.from_project_file(f) for f in manifest.files]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="projectgen archive",
        description="Pack DIR into a deterministic zip, tar or tar.gz, as the operator does for an export.",
    )
    parser.add_argument("--format", required=True, choices=ARCHIVE_TYPES, help="archive format")
    parser.add_argument(
        "--manifest",
        type=Path,
        help="manifest.json: archive exactly its files and check each one's size and SHA-256",
    )
    parser.add_argument("--prefix", help="top-level folder inside the archive (default: DIR's name)")
    parser.add_argument(
        "--level",
        type=int,
        choices=range(10),
        metavar="N",
        help=f"deflate level 0-9 for zip and tar.gz (default {DEFAULT_LEVEL})",
    )
    parser.add_argument("-o", "--output", required=True, type=Path, help="archive to write")
    parser.add_argument("dir", type=Path, metavar="DIR", help="directory to pack")
    args = parser.parse_args(argv)

    root = Path(os.path.abspath(args.dir))
    out = Path(os.path.abspath(args.output))
    try:
        if not root.is_dir():
            raise ArchiveError(f"{args.dir} is not a directory")
        prefix = validate_prefix(args.prefix if args.prefix is not None else root.name)
        if args.manifest is not None:
            members = _manifest_members(args.manifest)
        else:
            members = walk_members(root, skip=out)
        result = write_archive(root, members, args.format, out, prefix=prefix, level=args.level)
    except ArchiveError as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise CommandError(f"{exc.strerror or exc}{where}") from exc
    for warning in result.warnings:
        warn(warning)
    print(f"{result.path} size={result.size} sha256={result.sha256} entries={result.entries}")
    return 0
