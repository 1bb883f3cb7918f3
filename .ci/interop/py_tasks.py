"""The official Python SDK as a client of the MCP tasks extension (SEP-2663), on 2026-07-28.

mcp 2.3.0 has no tasks client of its own; its generic client-extension API (SEP-2133) declares
`io.modelcontextprotocol/tasks`, claims the `resultType: "task"` answer of `tools/call` and
resolves it by polling `tasks/get`. While the task is `working`, a human approves the delegation
with the real CLI; the task must then complete with the tool's answer.

usage:
  python py_tasks.py <key> <url> <task-id> <approve-command...>   (the delegation id is appended)
Exits non-zero on any failure.
"""

import sys
from typing import Any, ClassVar, Literal

import anyio
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CallToolResult, Request, Result
from mcp_types._types import MCPModel

TASKS = "io.modelcontextprotocol/tasks"


class TaskHandle(Result):
    result_type: Literal["task"]
    task_id: str
    status: str
    ttl_ms: int | None = None


class GetTaskParams(MCPModel):
    task_id: str


class GetTaskRequest(Request[GetTaskParams, Literal["tasks/get"]]):
    name_param: ClassVar[str | None] = "taskId"


class TaskState(Result):
    task_id: str
    status: str
    status_message: str | None = None
    result: dict[str, Any] | None = None


def make_extension(approve: list[str], seen: list[str]) -> ClientExtension:
    async def resolve(handle: TaskHandle, ctx: ClaimContext) -> CallToolResult:
        assert handle.status == "working", handle
        get = GetTaskRequest(method="tasks/get", params=GetTaskParams(task_id=handle.task_id))
        state = await ctx.session.send_request(get, TaskState)
        assert state.status == "working" and "waiting for a human" in (state.status_message or ""), state
        seen.append("working")
        done = await anyio.run_process([*approve, handle.task_id], check=False)
        assert done.returncode == 0, done.stderr.decode()
        for _ in range(50):
            state = await ctx.session.send_request(get, TaskState)
            if state.status != "working":
                break
            await anyio.sleep(0.1)
        assert state.status == "completed" and state.result is not None, state
        seen.append("completed")
        return CallToolResult.model_validate(state.result)

    class Tasks(ClientExtension):
        identifier = TASKS

        def claims(self):
            return [ResultClaim(result_type="task", model=TaskHandle, resolve=resolve)]

    return Tasks()


async def main(key: str, url: str, task: str, approve: list[str]):
    with anyio.fail_after(60):
        await check(key, url, task, approve)


async def check(key: str, url: str, task: str, approve: list[str]):
    seen: list[str] = []
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    transport = streamable_http_client(url, http_client=http)
    async with Client(
        transport, mode="2026-07-28", raise_exceptions=True, extensions=[make_extension(approve, seen)]
    ) as client:
        res = await client.call_tool(
            "agent_delegate_task", {"taskId": task, "toAgentId": "interop-helper", "reason": "interop"}
        )
        assert not res.is_error, res
        assert res.structured_content["status"] == "approved", res
        assert seen == ["working", "completed"], seen
        print(f"OK python tasks: working, approved by the CLI, completed ({client.protocol_version})")


if __name__ == "__main__":
    try:
        anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
    except BaseException as e:  # noqa: BLE001 - any failure => non-zero
        if isinstance(e, SystemExit):
            raise
        import traceback

        traceback.print_exception(e)
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
