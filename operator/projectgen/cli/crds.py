"""`projectgen crds`: write the CRDs generated from the models, or check the files on disk."""

from __future__ import annotations

import argparse
from pathlib import Path

from projectgen import crdgen
from projectgen.cli.output import CommandError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="projectgen crds", description="Write the CRDs from the models.")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("crds"), help="directory (default: ./crds/)"
    )
    parser.add_argument("--check", action="store_true", help="fail if the files on disk are not up to date")
    args = parser.parse_args(argv)
    if args.check:
        stale = crdgen.stale_crds(args.output)
        if stale:
            raise CommandError(f"out of date: {', '.join(stale)}; run `projectgen crds`")
        print("CRDs are up to date")
        return 0
    for path in crdgen.write_crds(args.output):
        print(path)
    return 0
