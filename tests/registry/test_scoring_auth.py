"""The scoring server's optional bearer token, at the ASGI layer (the real server: test_serve.py)."""

from __future__ import annotations

import asyncio

import pytest

from components.registry.scoring_auth import OPEN_PATHS, TOKEN_ENV, BearerAuth, TokenError, read_token

pytestmark = pytest.mark.unit
TOKEN = "s3cret-token-0123456789abcdef"


async def _inner(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def call(app, path: str, authorization: str | None = None) -> tuple[int, dict, bytes]:
    headers = [(b"authorization", authorization.encode())] if authorization is not None else []
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "method": "POST", "headers": headers}
    asyncio.run(app(scope, receive, send))
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body


def test_invocations_need_the_token_and_health_checks_stay_open():
    app = BearerAuth(_inner, TOKEN)
    assert call(app, "/invocations", f"Bearer {TOKEN}")[0] == 200
    status, headers, body = call(app, "/invocations")
    assert status == 401 and headers[b"www-authenticate"] == b"Bearer" and b"UNAUTHENTICATED" in body
    for wrong in (f"Bearer {TOKEN}x", TOKEN, f"Basic {TOKEN}", "Bearer ", ""):
        status, _, body = call(app, "/invocations", wrong)
        assert status == 401 and TOKEN.encode() not in body
    assert all(call(app, path)[0] == 200 for path in OPEN_PATHS)
    protected = BearerAuth(_inner, TOKEN, open_paths=frozenset())
    assert call(protected, "/ping")[0] == 401 and call(protected, "/ping", f"Bearer {TOKEN}")[0] == 200


def test_the_token_comes_from_a_file_or_the_environment_and_must_be_long(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert read_token() is None  # no token: the server stays open, as before
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert read_token() == TOKEN
    path = tmp_path / "token"
    path.write_text(f"{TOKEN[::-1]}\n")
    assert read_token(path) == TOKEN[::-1]  # the file wins over the environment
    path.write_text("zq7x9\n")
    with pytest.raises(TokenError, match="5 characters") as short:
        read_token(path)
    assert "zq7x9" not in str(short.value)  # the message never holds the token
    with pytest.raises(TokenError, match="cannot read"):
        read_token(tmp_path / "missing")
