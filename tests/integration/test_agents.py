"""The Agent Protocol on a real broker, against the official SDKs: a mesh tool
hosted as an agent is discovered and prompted by `synadia-ai-agents`; an agent
hosted with `synadia-ai-agent-service` is called from the mesh as a tool."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import nats
import pytest
from synadia_ai.agent_service import AgentService, PromptStream, RequestRejectedError
from synadia_ai.agents import (
    Agents,
    DiscoverFilter,
    Envelope,
    ProtocolError,
    ResponseChunk,
    StatusChunk,
)

from actormesh import Mesh, ToolDenied, ToolFailed, ToolProgress
from actormesh.agents import (
    AgentBridge,
    AgentHost,
    AgentHostConfig,
    PromptError,
    discover_agents,
    prompt_agent,
)
from actormesh.testing import eventually, running_worker
from tests.actors_agents import Delegate, Oracle

pytestmark = pytest.mark.integration


async def _prompt(agents: Agents, name: str, text: str) -> tuple[list[object], str]:
    found = await agents.discover(filter=DiscoverFilter(agent=name))
    assert len(found) == 1
    chunks: list[object] = []
    async for item in found[0].prompt(text, timeout=10.0):
        chunks.append(item)
    reply = "".join(c.text for c in chunks if isinstance(c, ResponseChunk))
    return chunks, reply


async def test_official_client_discovers_and_prompts_a_hosted_tool(
    mesh: Mesh, nats_url: str
) -> None:
    await mesh.tools.grants.grant("shouter", "oracle.shout", "oracle.add")
    # Beats every second: the SDK tracks beats sent after its first discover().
    config = AgentHostConfig(
        tool="oracle.shout", principal="shouter", agent="shouter", heartbeat_interval_s=1
    )
    nc = await nats.connect(nats_url)
    agents = Agents(nc=nc)
    try:
        async with running_worker(mesh, Oracle), AgentHost(mesh, config) as host:
            found = await agents.discover(filter=DiscoverFilter(agent="shouter"))
            assert [a.instance_id for a in found] == [host.instance_id]
            agent = found[0]
            assert (agent.owner, agent.session_name, agent.protocol_version) == (
                "actormesh",
                "default",
                "0.3",
            )
            assert agent.prompt_subject == "agents.prompt.shouter.actormesh.default"
            assert agent.prompt_endpoint.attachments_ok is False
            chunks, reply = await _prompt(agents, "shouter", "hello mesh")
            assert isinstance(chunks[0], StatusChunk) and chunks[0].status == "ack"
            assert reply == "HELLO MESH!"
            status = await agent.status()
            assert status.instance_id == host.instance_id
            assert status.endpoints is not None
            assert status.endpoints["prompt"].subject == agent.prompt_subject
            # The heartbeat wildcard the SDK keeps sees this instance alive.
            await eventually(lambda: agents.liveness(host.instance_id) is not None)
    finally:
        await agents.close()
        await nc.close()


async def test_json_prompt_is_the_arguments_and_errors_are_frames(
    mesh: Mesh, nats_url: str
) -> None:
    await mesh.tools.grants.grant("adder", "oracle.add")
    nc = await nats.connect(nats_url)
    agents = Agents(nc=nc)
    add = AgentHostConfig(tool="oracle.add", principal="adder", agent="adder")
    # Not granted oracle.shout: the mesh refuses, the caller sees a 403 frame.
    denied = AgentHostConfig(tool="oracle.shout", principal="adder", agent="nope")
    try:
        async with (
            running_worker(mesh, Oracle),
            AgentHost(mesh, add),
            AgentHost(mesh, denied),
        ):
            _, reply = await _prompt(agents, "adder", '{"a": 2, "b": 40}')
            assert json.loads(reply) == {"sum": 42}
            with pytest.raises(ProtocolError, match="400"):
                await _prompt(agents, "adder", "two plus two")  # not the tool's arguments
            with pytest.raises(ProtocolError, match=r"403.*tool_denied"):
                await _prompt(agents, "nope", "hi")
    finally:
        await agents.close()
        await nc.close()


@contextlib.asynccontextmanager
async def _official_agent(nats_url: str, name: str) -> AsyncIterator[AgentService]:
    """An agent hosted with the official host SDK: it streams its answer in two
    chunks, fails on `fail`, and asks a question on `ask`."""
    nc = await nats.connect(nats_url)
    service = AgentService(agent=name, owner="tests", session_name="main", nc=nc)

    async def answer(envelope: Envelope, stream: PromptStream) -> None:
        if envelope.prompt == "fail":
            raise RequestRejectedError(422, "cannot do that")
        await stream.send("echo: ")
        await stream.send(envelope.prompt)

    service.on_prompt(answer)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
        await nc.close()


async def test_official_agent_called_from_an_actor_as_a_tool(mesh: Mesh, nats_url: str) -> None:
    async with _official_agent(nats_url, "echoer"), AgentBridge(mesh) as bridge:
        found = await discover_agents(mesh.nc)
        assert [(a.agent, a.owner, a.session) for a in found] == [("echoer", "tests", "main")]
        added = await bridge.add_discovered()
        assert [a.agent for a in added] == ["echoer"]
        spec = await mesh.tools.spec("agent-echoer.prompt")
        assert spec.input_schema["required"] == ["prompt"]
        async with running_worker(mesh, Delegate):
            await mesh.tools.grants.grant("me", "delegate.ask")
            # Default deny: the delegate actor has no grant for the agent's tool yet.
            with pytest.raises(ToolDenied):
                await mesh.tools.call("delegate.ask", {"prompt": "hi"}, principal="me")
            await mesh.tools.grants.grant("delegate", "agent-echoer.prompt")
            await eventually(lambda: _allowed_now(mesh, "delegate", "agent-echoer.prompt"))
            got = await mesh.tools.call("delegate.ask", {"prompt": "hi"}, principal="me")
            assert got == "echo: hi"
        # Called directly, the agent's chunks arrive as the call's progress.
        await mesh.tools.grants.grant("me", "agent-echoer.prompt")
        seen: list[ToolProgress] = []
        got = await mesh.tools.call(
            "agent-echoer.prompt", {"prompt": "there"}, principal="me", on_progress=seen.append
        )
        assert got == "echo: there"
        assert [p.data for p in seen] == [{"text": "echo: "}, {"text": "there"}]
        with pytest.raises(ToolFailed) as failed:
            await mesh.tools.call("agent-echoer.prompt", {"prompt": "fail"}, principal="me")
        assert failed.value.remote.code == "agent_422"
        assert "cannot do that" in failed.value.remote.remote_message


async def test_our_caller_against_our_host(mesh: Mesh) -> None:
    """Both our sides together: a mesh tool hosted as an agent, called back as a tool."""
    await mesh.tools.grants.grant("shouter", "oracle.shout")
    await mesh.tools.grants.grant("me", "agent-shouter.prompt")
    config = AgentHostConfig(tool="oracle.shout", principal="shouter", agent="shouter")
    async with (
        running_worker(mesh, Oracle),
        AgentHost(mesh, config),
        AgentBridge(mesh) as bridge,
    ):
        await bridge.add("shouter")
        got = await mesh.tools.call("agent-shouter.prompt", {"prompt": "loop"}, principal="me")
        assert got == "LOOP!"
        with pytest.raises(PromptError) as no_agent:
            await prompt_agent(mesh.nc, "agents.prompt.ghost.x.y", "hi", timeout=5.0)
        assert no_agent.value.code == "503"


def _allowed_now(mesh: Mesh, principal: str, tool: str) -> bool:
    return bool(mesh.tools.grants.allowed_now(principal, tool))
