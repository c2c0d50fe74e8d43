"""The audit API: recent entries, verification, checkpoints and Merkle proofs."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fangwire.auth import Role
from fangwire.hookspecs import hookimpl
from fangwire.http.context import runtime_of
from fangwire.http.errors import ApiError
from fangwire.http.params import bool_param, int_param
from fangwire.http.routes import QueryParam, RouteSpec

DEFAULT_RECENT = 50
MAX_RECENT = 500

_INT = {"type": "integer"}


async def recent(request: Request) -> Response:
    limit = (
        int_param(request, "limit", "n", default=DEFAULT_RECENT, minimum=1, maximum=MAX_RECENT)
        or DEFAULT_RECENT
    )
    entries, total = await runtime_of(request).audit.log.recent(limit)
    return JSONResponse({"entries": [e.to_json() for e in entries], "total": total})


async def verify(request: Request) -> Response:
    deep = bool_param(request, "deep")
    report = await runtime_of(request).audit.verify(deep=deep)
    return JSONResponse(report.to_json())


async def checkpoint(request: Request) -> Response:
    return JSONResponse(await runtime_of(request).audit.checkpoints.checkpoint())


async def inclusion(request: Request) -> Response:
    entry_id = int_param(request, "id", minimum=1)
    if entry_id is None:
        raise ApiError(400, "id: required (the entry id)", code="invalid_input")
    size = int_param(request, "size", minimum=1)
    try:
        proof = await runtime_of(request).audit.log.inclusion(entry_id, size)
    except LookupError as exc:
        raise ApiError(404, str(exc), code="not_found") from None
    return JSONResponse(proof)


async def consistency(request: Request) -> Response:
    first = int_param(request, "from", minimum=0)
    if first is None:
        raise ApiError(400, "from: required (the older tree size)", code="invalid_input")
    second = int_param(request, "to", minimum=0)
    try:
        proof = await runtime_of(request).audit.log.consistency(first, second)
    except LookupError as exc:
        raise ApiError(404, str(exc), code="not_found") from None
    return JSONResponse(proof)


@hookimpl
def register_routes(register: Callable[[RouteSpec], None]) -> None:
    common = {"tags": ("audit",), "role": Role.ADMIN}
    register(
        RouteSpec(
            "/audit/recent",
            recent,
            name="audit_recent",
            summary="Newest audit entries, newest first",
            cost=5,
            query=(
                QueryParam("limit", {**_INT, "minimum": 1, "maximum": MAX_RECENT}),
                QueryParam("n", {**_INT, "minimum": 1, "maximum": MAX_RECENT}, "alias of limit"),
            ),
            response_model={"type": "object"},
            **common,  # type: ignore[arg-type]
        )
    )
    register(
        RouteSpec(
            "/audit/verify",
            verify,
            name="audit_verify",
            summary="Walk the hash chain and compare it with the signed checkpoints",
            cost=20,
            query=(QueryParam("deep", {"type": "boolean"}, "also recompute Merkle roots"),),
            response_model={"type": "object"},
            **common,  # type: ignore[arg-type]
        )
    )
    register(
        RouteSpec(
            "/audit/checkpoint",
            checkpoint,
            name="audit_checkpoint",
            summary="The newest signed checkpoint (C2SP signed note) and the verifier key",
            cost=5,
            response_model={"type": "object"},
            tags=("audit",),
        )
    )
    register(
        RouteSpec(
            "/audit/proof/inclusion",
            inclusion,
            name="audit_inclusion_proof",
            summary="RFC 6962 inclusion proof of one entry",
            cost=5,
            query=(
                QueryParam("id", {**_INT, "minimum": 1}, "entry id", required=True),
                QueryParam("size", {**_INT, "minimum": 1}, "tree size (default: current)"),
            ),
            responses={404: "No such entry in a tree of that size"},
            response_model={"type": "object"},
            **common,  # type: ignore[arg-type]
        )
    )
    register(
        RouteSpec(
            "/audit/proof/consistency",
            consistency,
            name="audit_consistency_proof",
            summary="RFC 6962 consistency proof between two tree sizes",
            cost=5,
            query=(
                QueryParam("from", {**_INT, "minimum": 0}, "older tree size", required=True),
                QueryParam("to", {**_INT, "minimum": 0}, "newer tree size (default: current)"),
            ),
            responses={404: "Sizes out of range"},
            response_model={"type": "object"},
            **common,  # type: ignore[arg-type]
        )
    )
