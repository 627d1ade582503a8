"""`python -m bench [--quick] [--out PATH]`: run the benchmark, print the table, write Markdown.

The full run takes three to five minutes, `--quick` about one. The Markdown
goes to `docs/benchmarks.md` (or `--out`: a file, or a directory to hold
`benchmarks.md`); `--json PATH` also writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.report import write_json, write_markdown
from bench.rows import Plan
from bench.suite import Suite

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"Markdown file or directory ({DEFAULT_OUT}; with --only, none unless given)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument(
        "--only",
        default=None,
        help="run only these rows, by key, comma-separated: '5a,1c' "
        "('tail' or '2j': 2j and 2k, one-way with and without a tail attached)",
    )
    args = parser.parse_args(argv)
    # A partial run (--only) never replaces the full table unless told where to write.
    out: Path | None = args.out if args.out is not None or args.only else DEFAULT_OUT
    if out is not None and (out.is_dir() or not out.suffix):
        out = out / "benchmarks.md"

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    only = [k.strip() for k in args.only.replace("tail", "2j").split(",")] if args.only else None
    report = Suite(Plan.make(args.quick), log, only).run()
    print(report.text())
    written = []
    if out is not None:
        write_markdown(report, out)
        written.append(str(out))
    if args.json is not None:
        write_json(report, args.json)
        written.append(str(args.json))
    if written:
        print(f"\nwritten: {', '.join(written)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
