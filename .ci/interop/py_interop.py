"""Drives parallax-mcp with the official Python MCP SDK (mcp 2.3.0) on both protocol eras.

usage:
  python py_interop.py stdio <key> <server-cmd> [args...]
  python py_interop.py http  <key> <url>
Exits non-zero on any failure.
"""

import os
import sys

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

# The agent holds read:tasks and read:agents, not delegate:agents: that tool must stay hidden.
EXPECTED = {"agent_my_assignments", "agent_update_status", "agent_log_activity", "agent_list_workspace"}


def transport(argv):
    kind, key = argv[1], argv[2]
    if kind == "stdio":
        env = dict(os.environ, PARALLAX_API_KEY=key)
        return StdioServerParameters(command=argv[3], args=argv[4:], env=env)
    if kind == "http":
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
        return streamable_http_client(argv[3], http_client=http)
    raise SystemExit(f"unknown transport {kind}")


async def check(argv, mode):
    async with Client(transport(argv), mode=mode, raise_exceptions=True) as client:
        tools = await client.list_tools()
        names = {t.name for t in tools.tools}
        assert names == EXPECTED, names
        res = await client.call_tool("agent_my_assignments", {})
        assert not res.is_error, res
        tasks = res.structured_content["tasks"]
        assert len(tasks) == 1 and tasks[0]["task"]["title"] == "Interop task", tasks
        res = await client.call_tool("agent_update_status", {"status": "working", "message": "from python"})
        assert not res.is_error and res.structured_content["status"] == "working", res
        print(f"OK {argv[1]} mode={mode} negotiated={client.protocol_version}")


async def main():
    for mode in ["legacy", "2026-07-28"]:
        with anyio.fail_after(60):
            await check(sys.argv, mode)


if __name__ == "__main__":
    try:
        anyio.run(main)
    except BaseException as e:  # noqa: BLE001 - any failure => non-zero
        if isinstance(e, SystemExit):
            raise
        import traceback
        traceback.print_exception(e)
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
