"""`run_demo()` (what `cuemsg demo` runs) tells its whole story in a few seconds."""

from __future__ import annotations

from cuemsg.mailbox.demo import run_demo


def test_run_demo() -> None:
    lines: list[str] = []
    run_demo(out=lines.append)
    text = "\n".join(lines)
    assert "planner: got 'done: draft the intro' (thread article-1)" in text
    assert "planner: the writer says {'words': 5}" in text
    assert "planner: RemoteError ValueError: the writer cannot do that" in text
    assert "rejecting it (a dead letter)" in text
    records = [line for line in lines if " attempt(s): " in line]
    assert len(records) == 7
    assert any("failed" in r and "rejected: unreadable instructions" in r for r in records)
    assert all("by writer-1" in r or "by planner-1" in r for r in records)
    assert "dead letters (failed executions): 2" in text
