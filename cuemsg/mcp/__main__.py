"""`python -m cuemsg.mcp`: the same as `cuemsg mcp`."""

from __future__ import annotations

import sys

from cuemsg.mcp.cli import build_parser, run

if __name__ == "__main__":
    sys.exit(run(build_parser().parse_args()))
