"""Run A2A requests on fangwire's agents.

:class:`AgentBridge` is the SDK's ``AgentExecutor`` for every local agent: the request's call
context names the agent (``AGENT_KEY``), the text parts of the user's message are sent to it
through :meth:`fangwire.agents.AgentRegistry.message` (metered and budgeted like any other call),
and the answer becomes the task's artifact and final status message.

States are honest: ``submitted`` → ``working`` → ``completed`` with the answer, or ``failed``
with the model's (or the budget's) reason as the status message. A cancelled request stops
the model call and ends ``canceled``. A message without text is ``rejected`` (fangwire's agents
read text only).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from a2a.helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from a2a.types.a2a_pb2 import Part

from fangwire.agents import AgentCallFailed, AgentNotFound
from fangwire_a2a.taskstore import AGENT_KEY

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

log = logging.getLogger("fangwire.a2a")

ARTIFACT_NAME = "response"


class AgentBridge(AgentExecutor):
    """The SDK executor that hands each request to the fangwire agent it names."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        if context.message is None or context.task_id is None or context.context_id is None:
            raise ValueError("the request carries no message")
        if context.current_task is None:
            await event_queue.enqueue_event(new_task_from_user_message(context.message))
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.start_work()
        agent_id = str(context.call_context.state.get(AGENT_KEY, ""))
        caller = context.call_context.user.user_name or "anonymous"
        text = context.get_user_input()
        if not text.strip():
            reason = "the message has no text part; fangwire agents take text only"
            await updater.reject(updater.new_agent_message([Part(text=reason)]))
            return
        try:
            reply = await self.runtime.agents.message(
                agent_id, text, sender=f"a2a:{caller}", channel="a2a"
            )
        except AgentCallFailed as exc:
            reason = exc.reason
        except AgentNotFound as exc:
            reason = str(exc)
        except Exception as exc:  # a budget refusal, a store error ...
            log.info("a2a task %s failed: %s", context.task_id, type(exc).__name__)
            reason = str(getattr(exc, "message", "") or type(exc).__name__)
        else:
            parts = [Part(text=reply.text)]
            await updater.add_artifact(parts, name=ARTIFACT_NAME, last_chunk=True)
            await updater.complete(updater.new_agent_message(parts))
            return
        await updater.failed(updater.new_agent_message([Part(text=reason)]))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        if context.task_id is None or context.context_id is None:
            return
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.cancel()
