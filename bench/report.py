"""Results, targets, and the table: printed as text and written as Markdown.

`docs/benchmarks.md` keeps hand-written sections (profiles, hot spots):
a run replaces only the part between the `BEGIN` and `END` markers, or
writes a fresh file from `TEMPLATE` when there is none.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BEGIN = "<!-- bench:begin (written by `python -m bench`; edits inside are overwritten) -->"
END = "<!-- bench:end -->"


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The nearest-rank percentile of `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Row:
    """One line of the table.

    Attributes:
        key: a stable id ("1a", "2b", ...): the row number of the brief plus a letter.
        case: what was measured.
        value: the rate or amount; `unit` says what it counts.
        p50, p99: latencies in seconds (None where not measured).
        req_per_msg: HTTP requests the server answered per message (or call).
        note: which code ran, caveats, or why a figure is missing.
        server_cpu, client_cpu: CPU seconds per unit (message, call or request)
            used by the server process(es) and by the client processes.
    """

    key: str
    case: str
    value: float | None = None
    unit: str = ""
    p50: float | None = None
    p99: float | None = None
    req_per_msg: float | None = None
    note: str = ""
    server_cpu: float | None = None
    client_cpu: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ratio:
    """A ratio computed from rows of the same run; a target when it has a limit.

    `passed` is `ratio <= limit` (None when the ratio could not be computed).
    `sources` are the keys of the rows it is computed from.
    """

    key: str
    name: str
    definition: str
    ratio: float | None
    limit: float | None = None
    note: str = ""
    sources: tuple[str, ...] = ()

    @property
    def passed(self) -> bool | None:
        if self.ratio is None or self.limit is None:
            return None
        return self.ratio <= self.limit

    @property
    def verdict(self) -> str:
        if self.limit is None:
            return "info"
        return {True: "pass", False: "miss", None: "n/a"}[self.passed]


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


ROW_HEADER = (
    "#",
    "Case",
    "Value",
    "Unit",
    "p50 ms",
    "p99 ms",
    "HTTP req/msg",
    "Server CPU ms/unit",
    "Client CPU ms/unit",
    "Note",
)
RATIO_HEADER = ("Id", "Ratio", "Definition", "Value", "Limit", "Result", "Note")


def row_cells(row: Row) -> list[str]:
    return [
        row.key,
        row.case,
        _num(row.value),
        row.unit,
        _ms(row.p50),
        _ms(row.p99),
        _num(row.req_per_msg, 2),
        _ms(row.server_cpu),
        _ms(row.client_cpu),
        row.note,
    ]


def ratio_cells(r: Ratio) -> list[str]:
    return [
        r.key,
        r.name,
        r.definition,
        "-" if r.ratio is None else f"{r.ratio:.2f}",
        "-" if r.limit is None else f"<= {r.limit:g}",
        r.verdict,
        r.note,
    ]


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_escape(c) for c in cells) + " |" for cells in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], wrap: int = 60) -> str:
    """A plain aligned table for the terminal (long cells cut at `wrap`)."""
    cut = [[c if len(c) <= wrap else c[: wrap - 1] + "…" for c in cells] for cells in rows]
    widths = [max(len(h), *(len(r[i]) for r in cut)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*cells) for cells in cut]
    return "\n".join(out)


@dataclass
class Report:
    """Everything one run produced."""

    mode: str
    date: str
    machine: dict[str, str]
    rows: list[Row] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    duration: float = 0.0
    load: list[float] = field(default_factory=list)  # 1-minute load averages seen during the run

    def row(self, key: str) -> Row | None:
        return next((r for r in self.rows if r.key == key), None)

    def header(self) -> str:
        m = self.machine
        text = (
            f"Measured {self.date} by `python -m bench{' --quick' if self.mode == 'quick' else ''}`"
            f" ({self.mode} run, {self.duration:.0f} s) on {m['cpu']}, {m['cores']} cores,"
            f" {m['memory']} RAM, {m['python']}, {m['os']}; server: {m.get('http', 'unknown')}."
        )
        if self.load:
            # The first sample is taken before anything starts: it is other people's work.
            text += (
                f" Load average (1 min) when it started: {self.load[0]:.1f}; during the run"
                f" (its own processes included): up to {max(self.load):.1f}"
            )
            text += (
                ". Other work competed for the CPU: read the ratios, not the absolute figures."
                if self.load[0] > 1.0
                else "."
            )
        return text

    def text(self) -> str:
        return "\n\n".join(
            [
                self.header(),
                text_table(ROW_HEADER, [row_cells(r) for r in self.rows]),
                text_table(RATIO_HEADER, [ratio_cells(r) for r in self.ratios], wrap=70),
            ]
        )

    def markdown(self) -> str:
        return "\n\n".join(
            [
                BEGIN,
                self.header(),
                markdown_table(ROW_HEADER, [row_cells(r) for r in self.rows]),
                "Targets and ratios (each computed from rows of this same run):",
                markdown_table(RATIO_HEADER, [ratio_cells(r) for r in self.ratios]),
                END,
            ]
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for r, d in zip(self.ratios, out["ratios"], strict=True):
            d["result"] = r.verdict
        return out


TEMPLATE = """# Benchmarks

`python -m bench` (about 5 minutes; `--quick` for a one-minute smoke run)
starts the servers it needs (`cuemsg serve` in its own process), runs every
client role in processes of its own, prints the table below and rewrites the
part of this file between the markers. Only ratios measured in one run are
compared: absolute figures move with the machine and its load.

{table}
"""


def write_markdown(report: Report, path: Path) -> None:
    """Write the report into `path`, keeping what lies outside the markers."""
    block = report.markdown()
    if path.exists():
        text = path.read_text()
        start, end = text.find(BEGIN), text.find(END)
        if start != -1 and end > start:
            path.write_text(text[:start] + block + text[end + len(END) :])
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATE.format(table=block))


def write_json(report: Report, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=2))
