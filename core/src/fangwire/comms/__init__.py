"""Comms: the persisted event log of who talked to whom, task dispatch and the loop guard."""

from fangwire.comms.events import KINDS, CommsEvents
from fangwire.comms.loopguard import LoopDetected, LoopGuard
from fangwire.comms.service import Comms, NoAgentAvailable

__all__ = ["KINDS", "Comms", "CommsEvents", "LoopDetected", "LoopGuard", "NoAgentAvailable"]
