"""GET /api/security: the 16 systems, each computed from the running daemon."""

from __future__ import annotations

import base64
from importlib.metadata import entry_points

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fangwire.plugins import create_plugin_manager
from fangwire.security.registry import SYSTEMS, SecurityRegistry, SystemState
from fangwire.testing.fixtures import serve_client

pytestmark = pytest.mark.anyio

EXPECTED = {
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
}


async def report_for(runtime) -> dict:
    async with serve_client(runtime) as http:
        response = await http.get("/api/security")
        assert response.status_code == 200
        return response.json()


async def test_shape_is_the_documents(runtime):
    body = await report_for(runtime)
    assert set(body["security_systems"]) == EXPECTED == set(SYSTEMS)
    assert body["total_systems"] == 16
    assert set(body["details"]) == EXPECTED
    assert body["all_active"] is False  # systems of later components are not there yet
    assert set(body["security_systems"].values()) <= {"active", "inactive", "not_configured"}


async def test_systems_this_daemon_runs_are_active(runtime):
    body = await report_for(runtime)
    systems, details = body["security_systems"], body["details"]
    for name in (
        "merkle_audit_trail",
        "security_headers",
        "health_redaction",
        "gcra_rate_limiter",
        "path_traversal_prevention",
        "prompt_injection_scanning",
        "subprocess_sandbox",
        "session_repair",
        "capability_inheritance_validation",
        "loop_guard",
        "ssrf_protection",
    ):
        assert systems[name] == "active", name
    assert details["path_traversal_prevention"]["used_by"] == ["audit sink jsonl"]
    # The A2A client and the MCP HTTP transports fetch user-supplied URLs through the guard.
    assert systems["ssrf_protection"] == "active"
    assert details["ssrf_protection"]["used_by"] == ["a2a", "mcp:http", "mcp:sse"]
    # Helpers that exist but that no feature of this build runs yet are not claimed.
    for name in ("taint_tracking", "secret_zeroization"):
        assert systems[name] == "inactive", name
        assert "no component" in details[name]["reason"]
    for name in ("wasm_dual_metering", "ofp_hmac_auth"):
        assert systems[name] == "inactive", name


async def test_a_shared_helper_becomes_active_when_a_component_uses_it(runtime):
    assert runtime.security.state("ssrf_protection").status == "inactive"
    runtime.security.uses("ssrf_protection", "webhook delivery")
    state = runtime.security.state("ssrf_protection")
    assert state.status == "active"
    assert state.details["used_by"] == ["webhook delivery"]


async def test_injection_scanning_follows_the_channel_that_runs_it(make_runtime):
    group = "fangwire.channels"
    every_channel = ",".join(f"{group}:{ep.name}" for ep in entry_points(group=group))
    pm = create_plugin_manager(environ={"FANGWIRE_DISABLE_PLUGINS": every_channel}, strict=True)
    body = await report_for(make_runtime(pm=pm))
    assert body["security_systems"]["prompt_injection_scanning"] == "inactive"


async def test_rate_limiter_off_is_reported(make_runtime):
    body = await report_for(make_runtime("[rate_limit]\nenabled = false\n"))
    assert body["security_systems"]["gcra_rate_limiter"] == "inactive"
    assert "rate_limit.enabled" in body["details"]["gcra_rate_limiter"]["reason"]


async def test_sandbox_follows_the_stdio_transport(make_runtime):
    pm = create_plugin_manager(environ={"FANGWIRE_DISABLE_PLUGINS": "stdio"}, strict=True)
    body = await report_for(make_runtime(pm=pm))
    assert body["security_systems"]["subprocess_sandbox"] == "inactive"


async def test_manifest_signing_needs_trusted_keys(make_runtime):
    assert (await report_for(make_runtime()))["security_systems"]["manifest_signing"] == (
        "not_configured"
    )
    public = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    text = f'trusted_manifest_signers = ["{base64.b64encode(public).decode()}"]\n'
    runtime = make_runtime(text)
    # Configured, but nothing verifies manifests yet in this build: not claimed as active.
    assert (await report_for(runtime))["security_systems"]["manifest_signing"] == "inactive"
    runtime.security.uses("manifest_signing", "mcp catalog")
    assert (await report_for(runtime))["security_systems"]["manifest_signing"] == "active"


async def test_audit_trail_is_inactive_when_the_log_is_closed(runtime):
    assert runtime.security.state("merkle_audit_trail").status == "inactive"
    async with runtime.serving():
        assert runtime.security.state("merkle_audit_trail").status == "active"


def test_registry_rules():
    registry = SecurityRegistry()
    with pytest.raises(ValueError, match="unknown security system"):
        registry.register("made_up", lambda: SystemState("active"))
    registry.register("loop_guard", lambda: ("bogus", {}))
    assert registry.state("loop_guard").status == "inactive"

    def broken() -> SystemState:
        raise RuntimeError("boom")

    registry.register("loop_guard", broken)
    assert registry.state("loop_guard").details["reason"] == "its probe failed: RuntimeError"
    assert registry.report()["all_active"] is False


async def test_agent_systems_are_inactive_while_the_registry_is_closed(runtime):
    assert runtime.security.state("session_repair").status == "inactive"
    async with runtime.serving():
        assert runtime.security.state("session_repair").status == "active"
        assert runtime.security.state("capability_inheritance_validation").status == "active"
    assert runtime.security.state("capability_inheritance_validation").status == "inactive"


def test_headers_are_claimed_only_with_the_envelope_middleware(runtime):
    from fangwire.app import create_app

    app = create_app(runtime)
    assert runtime.security.state("security_headers").status == "active"
    app.user_middleware.clear()
    assert runtime.security.state("security_headers").status == "inactive"
