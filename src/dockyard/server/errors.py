"""Server-layer errors, mapped to HTTP responses by the API."""

from __future__ import annotations

from dockyard.errors import DockyardError


class ServerError(DockyardError):
    status_code = 500
    code = "internal"


class Unauthorized(ServerError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ServerError):
    status_code = 403
    code = "forbidden"


class Conflict(ServerError):
    status_code = 409
    code = "conflict"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class TooManyRequests(ServerError):
    status_code = 429
    code = "too_many_streams"
