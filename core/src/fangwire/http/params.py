"""Query parameters, checked: a bad value is a 400 that names the parameter."""

from __future__ import annotations

from starlette.requests import Request

from fangwire.http.errors import ApiError


def int_param(
    request: Request,
    *names: str,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    """The first of ``names`` present in the query string, as an integer within bounds."""
    for name in names:
        raw = request.query_params.get(name)
        if raw is None:
            continue
        text = raw.strip()
        if not text.lstrip("-").isdigit() or len(text) > 19:
            raise ApiError(400, f"{name}: expected an integer, got {raw!r}", code="invalid_input")
        value = int(text)
        if minimum is not None and value < minimum:
            raise ApiError(400, f"{name}: must be at least {minimum}", code="invalid_input")
        if maximum is not None and value > maximum:
            raise ApiError(400, f"{name}: must be at most {maximum}", code="invalid_input")
        return value
    return default


def bool_param(request: Request, name: str, *, default: bool = False) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise ApiError(400, f"{name}: expected true or false, got {raw!r}", code="invalid_input")
