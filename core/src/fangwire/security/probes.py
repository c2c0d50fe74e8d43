"""The core's own entries in the security report.

Each probe asks the component that owns a system; see :mod:`fangwire.security.registry`.
Systems owned by plugins (``subprocess_sandbox`` by the stdio transport, ...) are registered by
those plugins; those whose component has not landed yet stay ``inactive`` with the reason.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TYPE_CHECKING

from fangwire.security import injection, manifest, paths, ssrf, taint, zeroize
from fangwire.security.registry import SystemState

if TYPE_CHECKING:
    from fangwire.runtime import Runtime


def trusted_manifest_keys(runtime: Runtime) -> dict[str, bytes]:
    """``trusted_manifest_signers`` from the config, decoded (invalid entries skipped)."""
    keys: dict[str, bytes] = {}
    for encoded in runtime.config.trusted_manifest_signers:
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 32:
            keys[manifest.key_id(raw)] = raw
    return keys


def _used(
    runtime: Runtime, system: str, state: Callable[[], tuple[str, dict[str, object]]]
) -> Callable[[], SystemState]:
    """A probe for a shared helper: active only while some component runs it."""

    def probe() -> SystemState:
        users = runtime.security.users(system)
        status, details = state()
        if status != "active":
            return SystemState(status, details)  # type: ignore[arg-type]
        if not users:
            return SystemState(
                "inactive", {**details, "reason": "no component in this daemon uses it yet"}
            )
        return SystemState(status, {**details, "used_by": users})  # type: ignore[arg-type]

    return probe


def register_core_probes(runtime: Runtime) -> None:
    registry = runtime.security
    registry.register("merkle_audit_trail", runtime.audit.probe)
    registry.register("health_redaction", lambda: _health_redaction(runtime))
    for system, state in (
        ("path_traversal_prevention", paths.state),
        ("taint_tracking", taint.state),
        ("secret_zeroization", zeroize.state),
        ("ssrf_protection", ssrf.state),
        ("prompt_injection_scanning", injection.state),
    ):
        registry.register(system, _used(runtime, system, state))
    registry.register(
        "manifest_signing",
        _used(runtime, "manifest_signing", lambda: manifest.state(trusted_manifest_keys(runtime))),
    )


def _health_redaction(runtime: Runtime) -> SystemState:
    """Active when the public health route is the minimal one (status and version only)."""
    for _, spec in runtime.routes:
        if spec.name == "health" and spec.path == "/health":
            if spec.role is not None:
                return SystemState("active", {"public_health": False})
            fields = getattr(spec.response_model, "__attrs_attrs__", ())
            names = sorted(field.name for field in fields)
            if names == ["status", "version"]:
                return SystemState("active", {"public_fields": names})
            return SystemState("inactive", {"reason": f"public health shows {names}"})
    return SystemState("inactive", {"reason": "no health route is served"})
