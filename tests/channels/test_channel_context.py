"""What the core hands an adapter besides its settings: the routing policy and the environment."""

from __future__ import annotations

import pytest

from fangwire.runtime import Runtime

CONFIG = """
[channels.test]
allowed_users = ["alice"]
allowed_rooms = ["!room:example.org"]
group_policy = "all"
"""


@pytest.mark.anyio
async def test_adapter_sees_its_policy_and_the_daemon_environment(make_runtime) -> None:
    runtime: Runtime = make_runtime(CONFIG, environ={"SOME_NAME": "value"})
    async with runtime.serving():
        ctx = runtime.channels.running("test").adapter.ctx
        assert ctx.policy is runtime.channels.runners["test"].policy
        assert ctx.policy is not None
        assert ctx.policy.allowed_users == ("alice",)
        assert ctx.policy.allowed_chats == ("!room:example.org",)
        assert ctx.environ["SOME_NAME"] == "value"
        assert "value" not in repr(ctx)
