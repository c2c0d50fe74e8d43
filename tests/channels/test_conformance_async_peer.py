"""The conformance harness accepts a ``peer`` given by an async fixture (the usual case for a
peer that logs in to a real server), for every one of its checks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fangwire.testing.channels import ChannelConformance
from fangwire_channels.test import TestChannel
from tests.channels.test_test_channel import LoopbackPeer


class TestConformanceWithAnAsyncPeerFixture(ChannelConformance):
    adapter = TestChannel

    @pytest.fixture
    async def peer(self) -> AsyncIterator[LoopbackPeer]:
        yield LoopbackPeer()
