"""The request's text names the template versions a reviewer is asked to take: from the render the
branch was delivered last to this one."""

from __future__ import annotations

from projectgen.export.update.merge import MergeResult, PathList
from projectgen.export.update.record import TemplateRef, describe, template_refs

API = "https://git.example.org/platform/service-template.git"
DOCS = "https://git.example.org/platform/docs-template"
HASH = "ab" * 32


def text(before: list[TemplateRef], after: list[TemplateRef]) -> tuple[str, str]:
    merge = MergeResult(tree="0" * 40, changed=PathList(1, ["README.md"]))
    out = describe(
        export="billing",
        branch="main",
        content_hash=HASH,
        previous_hash="cd" * 32,
        merge=merge,
        templates_from=before,
        templates_to=after,
    )
    return out.title, out.body


def test_a_moved_template_is_named_from_to_in_title_and_body_and_a_still_one_is_not() -> None:
    title, body = text(
        [TemplateRef(0, API, "v1.0.0"), TemplateRef(1, DOCS, "v3.0.0")],
        [TemplateRef(0, API, "v1.1.0"), TemplateRef(1, DOCS, "v3.0.0")],
    )

    assert (
        title == f"projectgen: update from billing ({HASH[:12]}): template service-template v1.0.0 → v1.1.0"
    )
    assert f"Template `{API}` moved: `v1.0.0` → `v1.1.0`." in body.splitlines()
    assert DOCS not in body


def test_a_template_the_last_delivery_did_not_record_is_named_with_its_version_only() -> None:
    title, body = text([], [TemplateRef(0, API, "v1.1.0")])

    assert title == f"projectgen: update from billing ({HASH[:12]})"
    assert f"Template `{API}` at `v1.1.0`." in body.splitlines()


def test_status_templates_give_the_tag_else_the_commit_and_a_record_that_does_not_read_is_left_out() -> None:
    commit = "1" * 40
    refs = template_refs(
        [
            {
                "source": 0,
                "url": API,
                "ref": ">=1,<2",
                "kind": "Constraint",
                "tag": "v1.1.0",
                "commit": commit,
            },
            {"source": 2, "url": DOCS, "ref": "main", "kind": "Branch", "commit": commit},
            {"source": 3, "url": DOCS},
        ]
    )

    assert refs == (TemplateRef(0, API, "v1.1.0"), TemplateRef(2, DOCS, commit))
    assert TemplateRef.from_trailer(refs[0].trailer()) == refs[0]
