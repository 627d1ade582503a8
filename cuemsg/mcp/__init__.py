"""`cuemsg mcp`: LLM agents in any MCP client get a mailbox and tools to use it.

- `agent`: what the tools do, over the public Mailbox/CueClient API (no MCP);
- `held`: requests handed to the agent and not answered yet, leases kept alive;
- `resolve`: mailbox names and addresses; `history`: the record of messages;
- `server`: the MCP server on the official `mcp` SDK (`pip install 'cuemsg[mcp]'`);
- `sessions`: when a streamable HTTP session ends; `watch`: the new mail notice;
- `cli`: the command's arguments (`cuemsg mcp`, `python -m cuemsg.mcp`).

Importing this package needs no SDK; `cuemsg.mcp.server` does.
"""

from __future__ import annotations

from cuemsg.mcp.agent import Agent, AgentError

__all__ = ["Agent", "AgentError"]
