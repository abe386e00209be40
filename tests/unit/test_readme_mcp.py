"""The MCP client configuration README.md gives: an assistant starts `rag-server mcp` in its own working
directory with only the variables the configuration names."""

from __future__ import annotations

import json
import re
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def mcp_servers() -> dict[str, dict[str, object]]:
    blocks = re.findall(r"```json\n(.*?)```", README.read_text(), re.DOTALL)
    (config,) = [json.loads(b) for b in blocks if '"mcpServers"' in b]
    servers: dict[str, dict[str, object]] = config["mcpServers"]
    return servers


def test_the_stdio_configuration_names_its_database() -> None:
    # Without it, `.data` is relative to wherever the assistant started the server: a new, empty database
    # (the README's key is then unknown to it and the server exits; without a key it answers nothing).
    stdio = next(s for s in mcp_servers().values() if "command" in s)
    env = stdio["env"]
    assert isinstance(env, dict)
    named = env.get("DATABASE_URL") or env.get("RAG_DATA_DIR")
    assert named, f"the stdio server's env names no database: {env}"
    assert "DATABASE_URL" in env or Path(str(named)).is_absolute(), named
    assert str(stdio["command"]).startswith("/"), stdio["command"]


def test_the_http_configuration_sends_a_key() -> None:
    http = next(s for s in mcp_servers().values() if s.get("type") == "http")
    headers = http["headers"]
    assert isinstance(headers, dict) and str(headers["Authorization"]).startswith("Bearer ")
    assert str(http["url"]).endswith("/mcp")
