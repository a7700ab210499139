"""projectgen_dev.buildcache: a cached dev tool is built once, however many processes want it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from projectgen_dev.buildcache import build_once


class BuildFailed(RuntimeError):
    pass


def test_a_build_already_there_is_not_run_again(tmp_path: Path) -> None:
    ran: list[str] = []
    build_once(
        tmp_path / ".lock", lambda: True, lambda: ran.append("x"), what="t", error=BuildFailed, log=print
    )
    assert ran == []


def test_a_second_builder_waits_for_the_first_and_finds_it_built(tmp_path: Path) -> None:
    done = tmp_path / "tool"
    building, release = threading.Event(), threading.Event()
    builds: list[str] = []
    logs: list[str] = []

    def build(who: str) -> None:
        builds.append(who)
        building.set()
        assert release.wait(10)
        done.write_text("built")

    def builder(who: str) -> threading.Thread:
        thread = threading.Thread(
            target=build_once,
            args=(tmp_path / ".lock", done.exists, lambda: build(who)),
            kwargs={"what": "the tool", "error": BuildFailed, "log": logs.append},
        )
        thread.start()
        return thread

    first = builder("first")
    assert building.wait(10)
    second = builder("second")
    deadline = time.monotonic() + 10
    while "another process is building the tool; waiting for it" not in logs:
        assert time.monotonic() < deadline, logs
        time.sleep(0.01)
    release.set()
    first.join(10)
    second.join(10)
    assert builds == ["first"]
    assert logs.count("building the tool") == 1


def test_a_failed_script_and_an_incomplete_build_raise(tmp_path: Path) -> None:
    script = tmp_path / "build-tool.sh"
    script.write_text("echo progress; exit 3\n")
    with pytest.raises(BuildFailed, match=r"build-tool.sh failed with exit code 3 \(see its output above\)"):
        build_once(
            tmp_path / ".lock", lambda: False, ["bash", str(script)], what="t", error=BuildFailed, log=print
        )
    script.write_text("exit 0\n")
    with pytest.raises(BuildFailed, match="building t finished, but left the cache incomplete"):
        build_once(
            tmp_path / ".lock", lambda: False, ["bash", str(script)], what="t", error=BuildFailed, log=print
        )
