"""The 16 security systems and the state each one reports.

``GET /api/security`` shows, for each system of LibreFang's list, whether it is really
working in this daemon. Nothing here is a constant: the component that owns a system registers
a *probe*, a function that looks at the running component and returns its state, and the
report calls every probe when it is asked. A system that no component has registered is
``"inactive"``, with the reason.

States: ``"active"`` (the code path is running), ``"inactive"`` (present but off, or missing;
``details`` says why), ``"not_configured"`` (available, waiting for operator settings).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

log = logging.getLogger("fangwire.security")

SYSTEMS: tuple[str, ...] = (
    "merkle_audit_trail",
    "taint_tracking",
    "wasm_dual_metering",
    "security_headers",
    "health_redaction",
    "subprocess_sandbox",
    "manifest_signing",
    "gcra_rate_limiter",
    "secret_zeroization",
    "path_traversal_prevention",
    "ssrf_protection",
    "capability_inheritance_validation",
    "ofp_hmac_auth",
    "prompt_injection_scanning",
    "loop_guard",
    "session_repair",
)

Status = Literal["active", "inactive", "not_configured"]
STATUSES: frozenset[str] = frozenset({"active", "inactive", "not_configured"})


@attrs.frozen
class SystemState:
    status: Status
    details: Mapping[str, Any] = attrs.field(factory=dict)


Probe = Callable[[], "SystemState | tuple[str, Mapping[str, Any]]"]


class SecurityRegistry:
    """Probes of the security systems, one per system (the owning component's)."""

    def __init__(self) -> None:
        self._probes: dict[str, Probe] = {}
        self._users: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def uses(self, system: str, component: str) -> None:
        """Declare that ``component`` runs ``system``'s code path (see :meth:`users`)."""
        if system not in SYSTEMS:
            raise ValueError(f"unknown security system {system!r}")
        with self._lock:
            self._users.setdefault(system, set()).add(component)

    def users(self, system: str) -> list[str]:
        """Components that declared they use ``system``; a shared guard that nobody uses is
        not running, whatever its module could do."""
        with self._lock:
            return sorted(self._users.get(system, ()))

    def register(self, system: str, probe: Probe) -> None:
        """Make ``probe`` the source of ``system``'s state (replacing an earlier one)."""
        if system not in SYSTEMS:
            raise ValueError(f"unknown security system {system!r}")
        with self._lock:
            self._probes[system] = probe

    def unregister(self, system: str) -> None:
        with self._lock:
            self._probes.pop(system, None)

    def state(self, system: str) -> SystemState:
        with self._lock:
            probe = self._probes.get(system)
        if probe is None:
            return SystemState("inactive", {"reason": "no component in this daemon provides it"})
        try:
            result = probe()
        except Exception as exc:
            log.exception("security probe for %s failed", system)
            return SystemState("inactive", {"reason": f"its probe failed: {type(exc).__name__}"})
        if isinstance(result, SystemState):
            return result
        status, details = result
        if status not in STATUSES:
            return SystemState("inactive", {"reason": f"its probe reported {status!r}"})
        return SystemState(status, dict(details))  # type: ignore[arg-type]

    def report(self) -> dict[str, Any]:
        """The ``/api/security`` body."""
        states = {name: self.state(name) for name in SYSTEMS}
        return {
            "security_systems": {name: s.status for name, s in states.items()},
            "details": {name: dict(s.details) for name, s in states.items()},
            "total_systems": len(SYSTEMS),
            "all_active": all(s.status == "active" for s in states.values()),
        }
