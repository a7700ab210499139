"""Template refs: version constraints, branches, pins (refs.py), over real git and the pure listing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_generation_template import git, publish, server, template, work

from projectgen.api.v1alpha1.generatedproject import RefKind
from projectgen.generation import refs
from projectgen.generation.errors import GenerationError
from projectgen.generation.render import render_project
from projectgen_dev.gitserver import GitHTTPServer

__all__ = ["server", "work"]  # fixtures

A, B, C, D = "a" * 40, "b" * 40, "c" * 40, "d" * 40
LISTING = refs.parse_listing(
    [
        f"{D}\tHEAD",
        f"{D}\trefs/heads/main",
        f"{C}\trefs/heads/next",
        f"{A}\trefs/tags/v1.0.0",
        f"{'e' * 40}\trefs/tags/v1.2.0",  # an annotated tag: the commit is the peeled line
        f"{B}\trefs/tags/v1.2.0^{{}}",
        f"{C}\trefs/tags/v2.0.0rc1",
        f"{D}\trefs/tags/v2.0.0",
        f"{A}\trefs/tags/not-a-version",
        f"{B}\trefs/pull/1/head",
    ]
)


@pytest.mark.parametrize(
    ("ref", "kind", "tag", "commit"),
    [
        (">=1,<2", RefKind.CONSTRAINT, "v1.2.0", B),
        ("~=1.0", RefKind.CONSTRAINT, "v1.2.0", B),
        ("==1.*", RefKind.CONSTRAINT, "v1.2.0", B),
        ("==1.0.0", RefKind.CONSTRAINT, "v1.0.0", A),
        ("<1.1", RefKind.CONSTRAINT, "v1.0.0", A),
        (">=2.0.0rc1", RefKind.CONSTRAINT, "v2.0.0", D),
        ("==2.0.0rc1", RefKind.CONSTRAINT, "v2.0.0rc1", C),  # names a pre-release: allowed
        (">=2.0.0rc1,<=2.0.0rc9", RefKind.CONSTRAINT, "v2.0.0rc1", C),
        (">=1", RefKind.CONSTRAINT, "v2.0.0", D),
        (None, RefKind.LATEST, "v2.0.0", D),
        ("v1.0.0", RefKind.TAG, "v1.0.0", A),
        ("not-a-version", RefKind.TAG, "not-a-version", A),
        ("next", RefKind.BRANCH, None, C),
        ("0123456789abcdef", RefKind.COMMIT, None, "0123456789abcdef"),
    ],
)
def test_a_ref_resolves_as_copier_picks_tags(
    ref: str | None, kind: RefKind, tag: str | None, commit: str
) -> None:
    found = refs.resolve(ref, LISTING)
    assert (found.kind, found.tag, found.commit) == (kind, tag, commit)
    assert found.kind.follows == (kind in (RefKind.CONSTRAINT, RefKind.LATEST, RefKind.BRANCH))


def test_a_constraint_no_tag_matches_names_the_newest_tags() -> None:
    with pytest.raises(refs.RefError, match=r"no tag .* matches '>=3'.*v1.2.0, v2.0.0rc1, v2.0.0\)"):
        refs.resolve(">=3", LISTING)
    with pytest.raises(refs.RefError, match="not a valid PEP 440 version constraint"):
        refs.resolve(">=1,,<2 x", LISTING)
    assert refs.resolve(None, refs.Refs(head=C)).target == "HEAD"  # no version tags: the default branch


def test_the_clone_resolves_constraints_and_records_them_for_copier_update(
    tmp_path: Path, server: GitHTTPServer, work: Path
) -> None:
    """`_src_path` is the URL without credentials and `_commit` the tag the constraint chose, so
    `copier update` by hand finds both; status gets kind, tag and commit."""
    files = {
        "copier.yml": "name:\n  type: str\n",
        "{{_copier_conf.answers_file}}.jinja": "{{ _copier_answers|to_nice_yaml }}",
        "VERSION.jinja": "one\n",
    }
    url = publish(
        server,
        work,
        "follow",
        [
            ("v1.0.0", files),
            ("v1.1.0", {"VERSION.jinja": "one.one\n"}),
            ("v2.0.0", {"VERSION.jinja": "two\n"}),
        ],
    )
    secret = url.replace("http://", "http://user:s3cret@")
    spec = template(url=secret, ref=">=1,<2", data={"name": "x"})
    result = render_project(spec, tmp_path / "a" / "tree", configmaps={}.get)
    tree = tmp_path / "a" / "tree"
    assert (tree / "VERSION").read_text() == "one.one\n"
    answers = yaml.safe_load((tree / ".copier-answers.yml").read_text())
    assert answers["_src_path"] == url and answers["_commit"] == "v1.1.0"
    assert "s3cret" not in (tree / ".copier-answers.yml").read_text()
    [rec] = result.templates
    assert (rec.url, rec.ref, rec.kind, rec.tag, rec.source) == (url, ">=1,<2", "Constraint", "v1.1.0", 0)
    assert len(rec.commit) == 40

    result = render_project(
        template(url=url, ref="main", data={"name": "x"}), tmp_path / "b" / "tree", configmaps={}.get
    )
    assert (result.templates[0].kind, result.templates[0].tag) == ("Branch", None)

    with pytest.raises(GenerationError, match=r"sources\[0\]\.template\.ref: no tag .* matches '>=3'"):
        render_project(
            template(url=url, ref=">=3", data={"name": "x"}), tmp_path / "c" / "tree", configmaps={}.get
        )
    git(work / "follow", "tag", "v1.2.0")
    git(work / "follow", "push", "-q", "--tags", str(server.repo_path("tpl/follow")))
    result = render_project(
        template(url=url, ref="~=1.0", data={"name": "x"}), tmp_path / "d" / "tree", configmaps={}.get
    )
    assert result.templates[0].tag == "v1.2.0"
