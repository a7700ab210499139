"""What the reliability suite checks, shared by its modules.

- `tree_problems`, `archive_problems`, `repository_problems`: a rendered tree, an archive, a pushed
  commit, each compared file by file (SHA-256) with the project's `manifest.json`.
- `ConsistencyWatcher`: polls every status while the operator is killed or the API server goes
  away, and records any `Completed` status whose tree or archive is missing or not what it says.
- `debris`: what a crash may leave behind and a later run must have cleaned up.
- `token_forms`, `leaks`: the token in every spelling, searched in status, Events, logs and files.
- `Stats`: the numbers of the summary printed at the end of the session, kept in a JSON file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import threading
import time
import traceback
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from support import EXPORTS, GROUP, PROJECTS, VERSION

ARCHIVE_TYPES = ("zip", "tar", "tar.gz")
CHUNK = 1 << 20
SUMMARY_FILE = "projectgen-reliability-summary.json"
FULL = os.environ.get("PROJECTGEN_RELIABILITY_FULL", "") not in ("", "0", "false")
"""The heavy variants: `PROJECTGEN_RELIABILITY_FULL=1`."""


# --------------------------------------------------------------------------------------------
# the summary's numbers


class Stats:
    """Counters kept in a JSON file, so the terminal summary shows what actually ran."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _update(self, change: Callable[[dict[str, Any]], None]) -> None:
        with self._lock:
            try:
                data: dict[str, Any] = json.loads(self.path.read_text())
            except (FileNotFoundError, ValueError):
                data = {}
            change(data)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)

    def add(self, section: str, key: str, n: int = 1) -> None:
        def change(data: dict[str, Any]) -> None:
            counters = data.setdefault(section, {})
            counters[key] = counters.get(key, 0) + n

        self._update(change)

    def put(self, section: str, key: str, value: Any) -> None:
        self._update(lambda data: data.setdefault(section, {}).__setitem__(key, value))

    def note(self, section: str, value: str) -> None:
        self._update(lambda data: data.setdefault(section, {}).setdefault("notes", []).append(value))


# --------------------------------------------------------------------------------------------
# trees, archives and repositories against their manifest


def sha256_file(path: Path | str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def sha256_stream(fh: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := fh.read(CHUNK):
        h.update(chunk)
    return h.hexdigest()


def load_manifest(output_dir: str | Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(output_dir) / "manifest.json").read_text(encoding="utf-8"))
    return data


def manifest_hash(files: Iterable[dict[str, Any]]) -> str:
    """The contentHash of a manifest's files, computed here rather than trusted."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: str(f["path"])):
        mode = "link" if f.get("target") is not None else "755" if f.get("executable") else "644"
        h.update(f"{f['sha256']} {mode} {f['path']}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def walk_tree(root: Path) -> tuple[dict[str, os.stat_result], list[str]]:
    """Regular files and symlinks under `root` by relative path, and anything that is neither a
    file, a link nor a directory (fifos, sockets ...). Links are never followed."""
    files: dict[str, os.stat_result] = {}
    odd: list[str] = []
    for directory, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            full = os.path.join(directory, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                files[rel] = st
            elif not stat.S_ISDIR(st.st_mode):
                odd.append(rel)
    return files, odd


def tree_problems(status: dict[str, Any], *, deep: bool = True) -> list[str]:
    """Why the tree a Completed status points at is not exactly its manifest (empty: it is)."""
    out = status.get("outputDirectory")
    if not out:
        return ["Completed without outputDirectory"]
    try:
        manifest = load_manifest(out)
    except (OSError, ValueError) as exc:
        return [f"manifest.json of {out} unreadable: {exc!r}"]
    problems = []
    files = manifest["files"]
    if manifest.get("contentHash") != status.get("contentHash"):
        problems.append(
            f"manifest contentHash {manifest.get('contentHash')} != status {status.get('contentHash')}"
        )
    if manifest_hash(files) != manifest.get("contentHash"):
        problems.append("manifest contentHash does not match its own files")
    if status.get("totalFiles") != len(files) or status.get("totalSize") != sum(f["size"] for f in files):
        problems.append("status totals do not match the manifest")
    root = Path(out) / "tree"
    if not root.is_dir():
        return [*problems, f"{root} is not a directory"]
    if not deep:
        return problems
    on_disk, odd = walk_tree(root)
    problems += [f"not a regular file or directory: {p}" for p in odd]
    listed = {f["path"] for f in files}
    if set(on_disk) != listed:
        extra, missing = sorted(set(on_disk) - listed)[:5], sorted(listed - set(on_disk))[:5]
        problems.append(f"tree differs from manifest: extra {extra}, missing {missing}")
    for f in files:
        st = on_disk.get(f["path"])
        if st is None:
            continue
        if stat.S_ISLNK(st.st_mode) or f.get("target") is not None:
            # A link as git stores it: its target's text is its content.
            target = os.readlink(root / f["path"]) if stat.S_ISLNK(st.st_mode) else None
            if target != f.get("target"):
                problems.append(f"{f['path']}: link target {target!r} != manifest {f.get('target')!r}")
            elif hashlib.sha256(os.fsencode(target)).hexdigest() != f["sha256"]:
                problems.append(f"{f['path']}: sha256 of the link target differs from the manifest")
            continue
        if st.st_size != f["size"]:
            problems.append(f"{f['path']}: size {st.st_size} != {f['size']}")
        elif sha256_file(root / f["path"]) != f["sha256"]:
            problems.append(f"{f['path']}: sha256 differs from the manifest")
        if bool(st.st_mode & 0o111) != bool(f.get("executable")):
            problems.append(f"{f['path']}: executable bit differs from the manifest")
    return problems


def archive_file_problems(status: dict[str, Any]) -> list[str]:
    """The archive a Completed status points at exists with its size and SHA-256."""
    path = status.get("archivePath")
    if not path:
        return ["Completed without archivePath"]
    try:
        size = os.stat(path).st_size
        digest = sha256_file(path)
    except OSError as exc:
        return [f"archive {path} unreadable: {exc!r}"]
    problems = []
    if size != status.get("archiveSize"):
        problems.append(f"archive size {size} != status {status.get('archiveSize')}")
    if digest != status.get("archiveSha256"):
        problems.append(f"archive sha256 {digest[:12]} != status {str(status.get('archiveSha256'))[:12]}")
    return problems


def _archive_entries(path: Path) -> Iterator[tuple[str, str, int, IO[bytes] | None]]:
    """(name, kind, mode, content) of every entry; kind is 'dir', 'file' or something else."""
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                mode = info.external_attr >> 16
                if info.is_dir():
                    yield info.filename.rstrip("/"), "dir", mode, None
                elif stat.S_ISLNK(mode):
                    yield info.filename, "symlink", mode, None
                else:
                    with zf.open(info) as fh:
                        yield info.filename, "file", mode, fh
        return
    with tarfile.open(path, mode="r:*") as tf:
        for member in tf:
            if member.isdir():
                yield member.name.rstrip("/"), "dir", member.mode, None
            elif member.isfile():
                fh = tf.extractfile(member)
                assert fh is not None
                yield member.name, "file", member.mode, fh
            else:
                yield member.name, f"type {member.type!r}", member.mode, None


def archive_problems(status: dict[str, Any], files: list[dict[str, Any]], prefix: str) -> list[str]:
    """The archive is what its status says, and holds exactly `files` (a manifest) under `prefix/`."""
    problems = archive_file_problems(status)
    if problems:
        return problems
    expected = {f"{prefix}/{f['path']}": f for f in files}
    seen: set[str] = set()
    try:
        for name, kind, mode, fh in _archive_entries(Path(status["archivePath"])):
            if name != prefix and not name.startswith(prefix + "/"):
                problems.append(f"entry {name!r} outside {prefix}/")
            if ".." in name.split("/") or name.startswith("/"):
                problems.append(f"entry {name!r} escapes the archive")
            if kind == "dir":
                continue
            if kind != "file":
                problems.append(f"entry {name!r} is a {kind}")
                continue
            f = expected.get(name)
            if f is None:
                problems.append(f"entry {name!r} is not in the manifest")
                continue
            seen.add(name)
            assert fh is not None
            if sha256_stream(fh) != f["sha256"]:
                problems.append(f"entry {name!r}: sha256 differs from the manifest")
            if (mode & 0o777) != (0o755 if f.get("executable") else 0o644):
                problems.append(f"entry {name!r}: mode {mode & 0o777:o}")
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        return [*problems, f"archive unreadable: {exc!r}"]
    missing = sorted(set(expected) - seen)
    if missing:
        problems.append(f"{len(missing)} manifest files missing from the archive, e.g. {missing[:3]}")
    return problems


def repository_problems(bare: Path, commit: str, files: list[dict[str, Any]]) -> list[str]:
    """The pushed commit holds exactly `files`, byte for byte and mode for mode."""
    proc = subprocess.run(
        ["git", f"--git-dir={bare}", "archive", "--format=tar", commit],
        capture_output=True,
        check=False,
        timeout=120,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(bare)},
    )
    if proc.returncode != 0:
        return [f"git archive {commit[:12]} failed: {proc.stderr.decode(errors='replace')[-300:]}"]
    expected = {f["path"]: f for f in files}
    seen: dict[str, tuple[str, bool]] = {}
    with tarfile.open(fileobj=io.BytesIO(proc.stdout), mode="r:") as tf:
        for member in tf:
            if member.isfile():
                fh = tf.extractfile(member)
                assert fh is not None
                seen[member.name] = (sha256_stream(fh), bool(member.mode & 0o111))
            elif not member.isdir() and member.type != tarfile.XGLTYPE:
                seen[member.name] = ("not a file", False)
    problems = []
    if set(seen) != set(expected):
        extra, missing = sorted(set(seen) - set(expected))[:5], sorted(set(expected) - set(seen))[:5]
        problems.append(f"commit {commit[:12]} differs from the manifest: extra {extra}, missing {missing}")
    for path, (digest, executable) in seen.items():
        f = expected.get(path)
        if f is not None and (digest, executable) != (f["sha256"], bool(f.get("executable"))):
            problems.append(f"commit {commit[:12]}: {path} differs from the manifest")
    return problems


def bare_head(bare: Path, branch: str = "main") -> str | None:
    proc = subprocess.run(
        ["git", f"--git-dir={bare}", "rev-parse", "--verify", "-q", f"refs/heads/{branch}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or None


# --------------------------------------------------------------------------------------------
# crash debris


def debris(data_dir: Path, tmp_dir: Path | None = None) -> list[str]:
    """What a crash may leave and must not outlive the next run: staging entries, temp files
    beside archives, more than one render per resource, git work directories in the temp dir."""
    found = []
    staging = data_dir / ".staging"
    if staging.is_dir():
        found += [f".staging/{p.name}" for p in staging.iterdir()]
    exports = data_dir / "exports"
    if exports.is_dir():
        for uid_dir in exports.glob("*/*/*"):
            files = [p.name for p in uid_dir.iterdir()]
            found += [f"{uid_dir.relative_to(data_dir)}/{n}" for n in files if n.startswith(".")]
            if len(files) > 1:
                found.append(f"{uid_dir.relative_to(data_dir)} holds {sorted(files)}")
    projects = data_dir / "projects"
    if projects.is_dir():
        for name_dir in projects.glob("*/*"):
            uids = list(name_dir.iterdir())
            if len(uids) > 1:
                found.append(f"{name_dir.relative_to(data_dir)} holds {len(uids)} uids")
            for uid_dir in uids:
                renders = list(uid_dir.iterdir())
                if len(renders) != 1:
                    found.append(f"{uid_dir.relative_to(data_dir)} holds {len(renders)} renders")
    if tmp_dir is not None and tmp_dir.is_dir():
        found += [f"$TMPDIR/{p.name}" for p in tmp_dir.iterdir()]
    return found


# --------------------------------------------------------------------------------------------
# watching statuses while things break


class ConsistencyWatcher:
    """Polls every GeneratedProject and RepositoryExport of some namespaces in a thread and
    checks each `Completed` status against the files it names: a tree equal to its manifest, an
    archive with the recorded size and SHA-256, a pushed commit (`check_publish`).

    A check that fails is repeated after reading the object again: when the status moved on in
    the meantime, the files were legitimately replaced and nothing is recorded. A status that
    still says Completed about files that are not there (or not whole) is a violation.

    A watcher that stopped checking would report no violations: an error that ends its thread is
    kept and raised when the `with` block ends, and `unchecked()` names the resources it never
    saw Completed, so a test can show that it watched what it claims to.
    """

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        namespaces: Iterable[str],
        *,
        interval: float = 0.2,
        check_publish: Callable[[dict[str, Any]], list[str]] | None = None,
    ) -> None:
        self.api = kubernetes.client.CustomObjectsApi(api)
        self.namespaces = list(namespaces)
        self.interval = interval
        self.check_publish = check_publish
        self.violations: list[str] = []
        self.checks = 0
        self.checked: set[tuple[str, str, str]] = set()
        """(plural, namespace, name) of every resource whose Completed status was checked."""
        self.failure: str | None = None
        self.api_errors = 0
        self._verified: dict[tuple[Any, ...], tuple[int, int, int] | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consistency-watcher", daemon=True)

    def __enter__(self) -> ConsistencyWatcher:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        if self._thread.is_alive():
            self.failure = self.failure or "the watcher did not stop within 30 s"
        if exc_type is None and self.failure is not None:  # never hide the test's own error
            raise AssertionError(f"the consistency watcher failed: {self.failure}")

    def unchecked(self, plural: str, namespace: str, names: Iterable[str]) -> list[str]:
        """Those of `names` whose Completed status the watcher never checked."""
        return [n for n in names if (plural, namespace, n) not in self.checked]

    def _list(self, namespace: str, plural: str) -> list[dict[str, Any]]:
        result = self.api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, _request_timeout=5)
        return list(result.get("items") or [])

    def _get(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, _request_timeout=5
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def _run(self) -> None:
        try:
            self._watch()
        except BaseException:
            self.failure = traceback.format_exc()

    def _watch(self) -> None:
        while not self._stop.is_set():
            for namespace in self.namespaces:
                for plural in (PROJECTS, EXPORTS):
                    try:
                        items = self._list(namespace, plural)
                    except Exception:  # the API server may be down on purpose
                        self.api_errors += 1
                        continue
                    for obj in items:
                        self._check(namespace, plural, obj)
            self._stop.wait(self.interval)

    def _check(self, namespace: str, plural: str, obj: dict[str, Any]) -> None:
        status = obj.get("status") or {}
        if status.get("phase") != "Completed":
            return
        self.checks += 1
        problems = self._problems(plural, obj)
        self.checked.add((plural, namespace, obj["metadata"]["name"]))
        if not problems:
            return
        name = obj["metadata"]["name"]
        try:
            again = self._get(namespace, plural, name)
        except Exception:
            return  # cannot tell: the API server is away
        if again is None or again["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            return
        self.violations.append(f"{plural}/{namespace}/{name} Completed but: {'; '.join(problems[:3])}")

    def _problems(self, plural: str, obj: dict[str, Any]) -> list[str]:
        status = obj["status"]
        uid = obj["metadata"]["uid"]
        if plural == PROJECTS:
            key: tuple[Any, ...] = (uid, status.get("outputDirectory"), status.get("contentHash"))
            deep = key not in self._verified
            problems = tree_problems(status, deep=deep)
            if not problems:
                self._verified[key] = None
            return problems
        export_type = (obj.get("spec") or {}).get("exportType")
        if export_type not in ARCHIVE_TYPES:
            return self.check_publish(obj) if self.check_publish else []
        path = status.get("archivePath") or ""
        key = (uid, path, status.get("archiveSha256"))
        try:
            st = os.stat(path)
        except OSError as exc:
            return [f"archive {path}: {exc!r}"]
        fingerprint = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._verified.get(key) == fingerprint:
            return []
        problems = archive_file_problems(status)
        if not problems:
            self._verified[key] = fingerprint
        return problems


# --------------------------------------------------------------------------------------------
# secrets


def token_forms(token: str) -> list[str]:
    """The token as it may leak: raw, base64, and the basic-auth headers git and the APIs use."""
    forms = {token, base64.b64encode(token.encode()).decode()}
    for user in ("x-access-token", "oauth2", ""):
        raw = f"{user}:{token}".encode()
        forms.add(base64.b64encode(raw).decode())
        forms.add(base64.urlsafe_b64encode(raw).decode())
    return sorted(forms)


def leaks(token: str, texts: dict[str, str], roots: Iterable[Path]) -> list[str]:
    """Where any form of `token` appears: in `texts` (label -> text) or any file under `roots`."""
    forms = token_forms(token)
    found = [f"{label} holds {form[:6]}…" for label, text in texts.items() for form in forms if form in text]
    encoded = [f.encode() for f in forms]
    for root in roots:
        if not root.exists():
            continue
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_symlink() or not path.is_file():
                continue
            with contextlib.suppress(OSError):
                data = path.read_bytes()
                found += [f"{path} holds the token" for form in encoded if form in data]
    return found


# --------------------------------------------------------------------------------------------
# waiting


def wait_until(what: str, check: Callable[[], str | None], timeout: float, interval: float = 0.2) -> None:
    """Poll `check` (None when satisfied, else why not) until it passes; fail with the last reason."""
    deadline = time.monotonic() + timeout
    reason: str | None = "never checked"
    while time.monotonic() < deadline:
        try:
            reason = check()
        except (ApiException, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # urllib3 errors while the API server restarts
            reason = f"{type(exc).__name__}: {exc}"
        if reason is None:
            return
        time.sleep(interval)
    raise AssertionError(f"{what} not reached after {timeout:.0f}s: {reason}")


def peak_rss_kib(pid: int) -> int:
    """VmHWM of a process: its peak resident set since it started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")
