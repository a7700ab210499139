"""`projectgen diff`: a render compared with a directory or a git repository, exit 0 / 1 / 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_generation_template import git, publish, server, work

from projectgen.cli import main
from projectgen.cli.diff import GitTarget, parse_target
from projectgen.cli.output import CommandError
from projectgen_dev.gitserver import GitHTTPServer

__all__ = ["server", "work"]  # fixtures


def gp(url: str, ref: str) -> str:
    return f"""\
apiVersion: projectgen.io/v1alpha1
kind: GeneratedProject
metadata: {{name: api, creationTimestamp: "2026-01-01T00:00:00Z"}}
spec:
  projectRef: {{name: api}}
  sources:
    - template: {{url: "{url}", ref: "{ref}", data: {{name: api}}}}
    - inline: {{files: [{{path: run.sh, content: "#!/bin/sh\\n", executable: true}}]}}
"""


V1 = {
    "copier.yml": "name:\n  type: str\n",
    "README.md.jinja": "# {{ name }}\n\nline two\nline three\n",
    "Makefile": "all:\n\techo v1\n",
}
V2 = {"README.md.jinja": "# {{ name }}\n\nline two, changed\nline three\n", "NEW.txt": "new in v2\n"}


@pytest.fixture(scope="module")
def template(server: GitHTTPServer, work: Path) -> str:
    url = publish(server, work, "diffed", [("v1.0.0", V1), ("v2.0.0", V2)])
    git(work / "diffed", "rm", "-q", "Makefile")
    git(work / "diffed", "commit", "-qm", "drop Makefile")
    git(work / "diffed", "tag", "v3.0.0")
    git(work / "diffed", "push", "-q", "--tags", str(server.repo_path("tpl/diffed")), "main")
    return url


def diff(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["diff", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_no_changes_exits_0_and_a_template_bump_exits_1_with_a_stat_and_a_diff(
    tmp_path: Path, template: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "gp.yaml"
    spec.write_text(gp(template, "~=1.0"))
    assert main(["render", "-f", str(spec), "-o", str(tmp_path / "repo")]) == 0
    (tmp_path / "repo" / ".git").mkdir()  # a working copy's metadata is never compared
    (tmp_path / "repo" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    capsys.readouterr()

    code, out, err = diff(capsys, "-f", str(spec), "--against", str(tmp_path / "repo"))
    assert (code, out) == (0, "") and "no changes" in err

    spec.write_text(gp(template, ">=2,<3"))
    code, out, err = diff(capsys, "-f", str(spec), "--against", str(tmp_path / "repo"))
    assert code == 1, err
    stat, _, patch = out.partition("\n\n")
    assert (
        stat.splitlines()
        == [
            " NEW.txt   |    1 +",
            " README.md |    2 +-",
            " 2 files changed, 2 insertions(+), 1 deletion(-)",
        ]
        or " 2 files changed, 2 insertions(+), 1 deletions(-)" in stat
    ), stat
    assert "diff --git a/NEW.txt b/NEW.txt\nnew file mode 100644\n--- /dev/null\n+++ b/NEW.txt\n" in patch
    assert "-line two\n+line two, changed\n" in patch
    assert "_commit: v2.0.0" not in patch  # this template writes no answers file

    spec.write_text(gp(template, "v3.0.0"))
    code, out, _ = diff(capsys, "-f", str(spec), "--against", str(tmp_path / "repo"), "--stat")
    assert code == 1 and " Makefile  |    2 --" in out and "diff --git" not in out


def test_a_git_repository_at_a_branch_and_path_is_a_target(
    tmp_path: Path, template: str, server: GitHTTPServer, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "gp.yaml"
    spec.write_text(gp(template, "==1.0.0"))
    assert main(["render", "-f", str(spec), "-o", str(tmp_path / "out")]) == 0
    repo = work / "delivered"
    shutil.copytree(tmp_path / "out", repo / "services" / "api", symlinks=True)
    git(repo, "init", "-q", "-b", "release")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "delivered")
    server.create_bare("team/delivered")
    git(repo, "push", "-q", str(server.repo_path("team/delivered")), "release")
    capsys.readouterr()
    target = f"{server.url('team/delivered')}@release:services/api"
    code, _, err = diff(capsys, "-f", str(spec), "--against", target)
    assert code == 0, err
    spec.write_text(gp(template, "v2.0.0"))
    code, out, _ = diff(capsys, "-f", str(spec), "--against", target)
    assert code == 1 and "+++ b/NEW.txt" in out


def test_base_previews_the_operators_three_way_merge_and_names_its_conflicts(
    tmp_path: Path, template: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--base: what the operator's day-two request would hold. The team's own file stays (a plain
    diff would show it deleted), and the line both changed is the conflict the request lists."""
    spec = tmp_path / "gp.yaml"
    spec.write_text(gp(template, "==1.0.0"))
    base, repo = tmp_path / "base", tmp_path / "repo"
    assert main(["render", "-f", str(spec), "-o", str(base)]) == 0
    shutil.copytree(base, repo, symlinks=True)
    (repo / "README.md").write_text("# api\n\nline two, by the team\nline three\n")
    (repo / "HUMAN.md").write_text("ours\n")
    capsys.readouterr()

    code, out, err = diff(capsys, "-f", str(spec), "--against", str(repo), "--base", str(base))
    assert (code, out) == (0, ""), err

    spec.write_text(gp(template, "v2.0.0"))
    code, out, err = diff(capsys, "-f", str(spec), "--against", str(repo), "--base", str(base))
    assert code == 1, err
    assert (
        "\n1 conflict (the operator's request would list them):\n- README.md (content): both changed" in out
    )
    assert "+++ b/NEW.txt" in out and "HUMAN.md" not in out
    assert "+<<<<<<< before updating\n line two, by the team\n+=======\n+line two, changed\n" in out

    code, out, err = diff(capsys, "-f", str(spec), "--against", str(repo), "--base", str(tmp_path / "nope"))
    assert code == 2 and "--base" in err and "not a directory" in err


def test_errors_exit_2_saying_what_is_wrong(
    tmp_path: Path, template: str, server: GitHTTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "gp.yaml"
    spec.write_text(gp(template, ">=9"))
    (tmp_path / "empty").mkdir()
    code, _, err = diff(capsys, "-f", str(spec), "--against", str(tmp_path / "empty"))
    assert (
        code == 2 and "error: sources[0].template.ref: no tag of the template repository matches '>=9'" in err
    )
    spec.write_text(gp(template, "v1.0.0"))
    code, _, err = diff(capsys, "-f", str(spec), "--against", str(tmp_path / "missing"))
    assert code == 2 and "not a directory" in err
    secret = server.url("team/nothing-here").replace("http://", "http://u:s3cret@")
    code, _, err = diff(capsys, "-f", str(spec), "--against", secret)
    assert code == 2 and "cannot clone http://" in err and "s3cret" not in err
    code, _, err = diff(capsys, "-f", str(spec))
    assert code == 2 and "--against" in err


def test_a_git_target_splits_into_url_branch_and_path() -> None:
    assert parse_target("https://u:p@git.example:8443/org/repo.git@main:svc/api") == GitTarget(
        "https://u:p@git.example:8443/org/repo.git", "main", "svc/api"
    )
    assert parse_target("https://git.example/org/repo.git") == GitTarget(
        "https://git.example/org/repo.git", None, None
    )
    assert parse_target("./checkout") == Path("checkout")
    with pytest.raises(CommandError, match=r"must not contain '\.' or '\.\.'"):
        parse_target("https://git.example/org/repo.git:../x")
