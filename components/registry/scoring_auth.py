"""Optional bearer-token authentication in front of the scoring server.

    token = read_token(Path("/run/secrets/serve-token"))     # or $INSTRUCTUE_SERVE_TOKEN
    app = BearerAuth(app, token, open_paths=OPEN_PATHS)       # /ping and /health stay open

Every request to a path outside `open_paths` needs `Authorization: Bearer <token>`; anything else
gets 401 with `WWW-Authenticate: Bearer` in MLflow's error shape. The comparison takes the same time
whatever the token sent (`hmac.compare_digest`). The token is read from a file or the environment
and never written anywhere: not to a log, not to a reply, not to the command line of the server
process (it reaches the server through its environment).
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path

from components.common import read_secret

TOKEN_ENV = "INSTRUCTUE_SERVE_TOKEN"
OPEN_PATHS = frozenset({"/ping", "/health"})  # what a load balancer's health check calls
MIN_TOKEN_CHARS = 16


class TokenError(ValueError):
    """A token file or value that cannot be used; the message never contains the token."""


def read_token(token_file: Path | None = None) -> str | None:
    """The token from `token_file` (its first line), else `$INSTRUCTUE_SERVE_TOKEN`, else None."""
    try:
        token = read_secret(token_file, TOKEN_ENV)
    except OSError as e:
        raise TokenError(f"cannot read the token file {token_file}: {e.strerror}") from None
    if token_file is None and not token:
        return None
    where = f"${TOKEN_ENV}" if token_file is None else f"the token file {token_file}"
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(
            f"{where} holds a token of {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
            "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


class BearerAuth:
    """ASGI middleware: `Authorization: Bearer <token>` on every HTTP path but `open_paths`."""

    def __init__(self, app, token: str, open_paths: frozenset[str] = OPEN_PATHS):  # noqa: ANN001 - ASGI app
        self.app, self.open_paths = app, frozenset(open_paths)
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):  # noqa: ANN001 - the ASGI signature
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        sent = next((v for k, v in scope.get("headers", []) if k.lower() == b"authorization"), b"")
        if hmac.compare_digest(sent, self._expected):
            return await self.app(scope, receive, send)
        body = json.dumps(
            {"error_code": "UNAUTHENTICATED", "message": "this server needs Authorization: Bearer <token>"}
        ).encode()
        await send({
            "type": "http.response.start", "status": 401,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", b"Bearer")],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": body})
        return None
