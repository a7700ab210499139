"""`projectgen download rexp/NAME [-n NS] [-o FILE]`: fetch an archive export with your own kubeconfig.

Through kube-apiserver's aggregation layer (``status.downloadPath``), so whatever authenticates you
to the cluster (certificates, tokens, OIDC, exec plugins) is what the operator sees, and RBAC
decides (``get`` on ``repositoryexports/archive``, part of view/edit/admin). The file is streamed
to disk, a partial file is resumed with ``Range`` (``If-Range`` makes sure it is the same archive),
and the result is checked against ``status.archiveSha256``: a mismatch fails, saying so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any, cast

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from projectgen.api.v1alpha1 import GROUP, VERSION
from projectgen.api.v1alpha1.repositoryexport import PLURAL
from projectgen.cli.output import CommandError
from projectgen.serving.download import download_path

KINDS = ("rexp", "repositoryexport", "repositoryexports", "repositoryexports.projectgen.io")
CHUNK = 256 * 1024
BUSY_ATTEMPTS = 6
"""Requests answered 429 (too many downloads at once) before the download gives up; each waits
the ``Retry-After`` it was given."""
RESUME_ATTEMPTS = 3
"""Responses in a row that may end without a byte more before the download gives up."""
PROGRESS_FROM = 1 << 20
"""Progress is shown for archives from this size (on a terminal, or with --progress)."""


def parse_target(target: str) -> str:
    kind, sep, name = target.partition("/")
    if not sep:
        return target
    if kind.lower() not in KINDS:
        raise CommandError(f"{target!r}: expected rexp/NAME (a RepositoryExport)")
    return name


def _client(context: str | None) -> tuple[kubernetes.client.ApiClient, str]:
    configuration = kubernetes.client.Configuration()
    namespace = "default"
    try:
        kubernetes.config.load_kube_config(context=context, client_configuration=configuration)
        _, active = kubernetes.config.list_kube_config_contexts()
        if context is None and active:
            namespace = (active.get("context") or {}).get("namespace") or namespace
    except (kubernetes.config.ConfigException, FileNotFoundError, TypeError) as exc:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException:
            raise CommandError(f"no kubeconfig ({exc}) and not in a cluster") from None
    return kubernetes.client.ApiClient(configuration), namespace


def _status_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.status} {exc.reason}"


class Progress:
    def __init__(self, name: str, total: int, stream: IO[str], enabled: bool) -> None:
        self.name, self.total, self.stream = name, total, stream
        self.enabled = enabled and total >= PROGRESS_FROM
        self._shown = 0.0

    def update(self, done: int, *, final: bool = False) -> None:
        if not self.enabled or (not final and time.monotonic() - self._shown < 0.2):
            return
        self._shown = time.monotonic()
        percent = 100 * done // self.total if self.total else 100
        mib = 1 << 20
        self.stream.write(f"\r{self.name}  {done / mib:.1f} / {self.total / mib:.1f} MiB  {percent}%")
        if final:
            self.stream.write("\n")
        self.stream.flush()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="projectgen download",
        description="Download an archive export (zip, tar, tar.gz) with your own kubeconfig; "
        "checks its SHA-256 against status.archiveSha256.",
    )
    parser.add_argument("target", help="rexp/NAME")
    parser.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    parser.add_argument(
        "-o", "--output", help="file to write (default: the archive's own name; - for stdout)"
    )
    parser.add_argument("--context", help="kubeconfig context to use")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", action="store_true", default=None, help="show progress on stderr")
    progress.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)

    name = parse_target(args.target)
    api, default_namespace = _client(args.context)
    namespace = args.namespace or default_namespace
    with api:
        try:
            export = cast(
                dict[str, Any],
                kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name
                ),
            )
        except ApiException as exc:
            raise CommandError(f"RepositoryExport {namespace}/{name}: {_status_message(exc)}") from None
        status = export.get("status") or {}
        expected = str(status.get("archiveSha256") or "")
        if status.get("phase") != "Completed" or not expected:
            raise CommandError(
                f"RepositoryExport {namespace}/{name} is {status.get('phase') or 'Pending'}, not Completed"
                + (f": {status['errorMessage']}" if status.get("errorMessage") else "")
            )
        path = str(status.get("downloadPath") or download_path(namespace, name))
        # The name the server sends in Content-Disposition; known before the request, to find a partial file.
        default_name = Path(str(status.get("archivePath") or f"{name}.archive")).name
        show = sys.stderr.isatty() if args.progress is None else args.progress
        if args.output == "-":
            digest = _fetch(api, path, sys.stdout.buffer, 0, expected, Progress(name, 0, sys.stderr, False))
            target = "(stdout)"
        else:
            target_path = Path(args.output or default_name)
            offset = target_path.stat().st_size if target_path.is_file() else 0
            size = int(status.get("archiveSize") or 0)
            if offset and size and offset > size:
                offset = 0  # longer than the archive: not a partial download of it
            if offset and offset == size:
                with open(target_path, "rb") as existing:
                    if hashlib.file_digest(existing, "sha256").hexdigest() == expected:
                        print(f"SHA-256 OK: {expected}  {target_path} (already downloaded)", file=sys.stderr)
                        return 0
                offset = 0  # the same size but other bytes: download it again
            if offset:
                print(f"{target_path}: resuming at byte {offset}", file=sys.stderr)
            with open(target_path, "r+b" if offset else "wb") as out:
                out.seek(offset)
                digest = _fetch(
                    api, path, out, offset, expected, Progress(target_path.name, size, sys.stderr, show)
                )
                out.truncate()
            target = str(target_path)
    if digest != expected:
        raise CommandError(
            f"SHA-256 mismatch: {target} is {digest}, status.archiveSha256 is {expected}"
            + (
                "; the partial file was not part of this archive: delete it and download again"
                if target != "(stdout)"
                else ""
            )
        )
    print(f"SHA-256 OK: {digest}  {target}", file=sys.stderr)
    return 0


def _fetch(
    api: kubernetes.client.ApiClient,
    path: str,
    out: IO[bytes],
    offset: int,
    expected: str,
    progress: Progress,
) -> str:
    """Stream the archive into ``out`` from ``offset`` on; return the SHA-256 of the whole file.

    A response cut short is resumed with ``Range`` from where it stopped: kube-apiserver ends every
    proxied request to an aggregated API after its ``--request-timeout`` (60 s by default; the
    archive subresource is not one of its long-running kinds), so a download that takes longer
    arrives in several responses. ``If-Range`` makes sure each is the same archive."""
    hasher = hashlib.sha256()
    done, total, stalls, first = offset, -1, 0, True
    while True:
        response = _request(api, path, done, expected)
        before = done
        try:
            if response.status == 206 and done:
                if first:  # the partial file on disk: its bytes count towards the digest
                    out.seek(0)
                    _hash_prefix(out, done, hasher)
            else:  # the whole archive: from the start
                if done and not out.seekable():
                    raise CommandError(
                        f"download of {path}: the archive changed while it was being downloaded"
                    )
                if out.seekable():
                    out.seek(0)
                hasher, done = hashlib.sha256(), 0
            first = False
            total = _total(response, done, total)
            try:
                for chunk in response.stream(CHUNK, decode_content=False):
                    out.write(chunk)
                    hasher.update(chunk)
                    done += len(chunk)
                    progress.update(done)
            except urllib3.exceptions.HTTPError:  # cut short: resumed below
                pass
        finally:
            response.release_conn()
        if total < 0 or done >= total:
            break
        stalls = 0 if done > before else stalls + 1
        if stalls >= RESUME_ATTEMPTS:
            raise CommandError(
                f"download of {path}: cut at byte {done} of {total}, and resuming gets no further"
            )
        print(f"resuming at byte {done} of {total} (the response was cut short)", file=sys.stderr)
    progress.update(done, final=True)
    return hasher.hexdigest()


def _request(api: kubernetes.client.ApiClient, path: str, offset: int, expected: str) -> Any:
    headers = {"Accept": "*/*"}
    if offset:
        headers |= {"Range": f"bytes={offset}-", "If-Range": f'"{expected}"'}
    method, url, headers, _, _ = api.param_serialize(
        "GET", path, header_params=headers, auth_settings=["BearerToken"]
    )
    for _ in range(BUSY_ATTEMPTS):
        try:
            response = api.call_api(method, url, header_params=headers).response
        except kubernetes.client.exceptions.OpenApiException as exc:
            raise CommandError(f"download of {path}: {exc}") from None
        if response.status != 429:
            break
        wait = response.headers.get("Retry-After", "")
        response.release_conn()
        seconds = min(int(wait), 60) if wait.isdigit() else 10
        print(f"the operator is busy (429): trying again in {seconds}s", file=sys.stderr)
        time.sleep(seconds)
    if response.status >= 400:
        try:
            message = str(json.loads(response.data)["message"])
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {response.status}"
        response.release_conn()
        raise CommandError(f"download of {path}: {message}")
    return response


def _total(response: Any, offset: int, known: int) -> int:
    """The archive's size from this response's headers (-1: unknown, read to the end)."""
    content_range = response.headers.get("Content-Range", "")
    if content_range.rpartition("/")[2].isdigit():
        return int(content_range.rpartition("/")[2])
    length = response.headers.get("Content-Length", "")
    return offset + int(length) if length.isdigit() else known


def _hash_prefix(out: IO[bytes], length: int, hasher: Any) -> None:
    """Hash the first ``length`` bytes already in the file (opened r+b), leaving the position after them."""
    reader = os.fdopen(os.dup(out.fileno()), "rb")
    with reader:
        reader.seek(0)
        remaining = length
        while remaining:
            block = reader.read(min(CHUNK, remaining))
            if not block:
                break
            hasher.update(block)
            remaining -= len(block)
    out.seek(length)
