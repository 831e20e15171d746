"""The scoring server: MLflow's own scoring app for a registry version, behind request bounds.

    python -m components.registry.scoring_app models:/instructue-movielens-100k@champion --port 5001

It downloads the version once, loads it with MLflow's `scoring_server` (its `/ping`, `/health`,
`/version` and `/invocations` protocol unchanged), optionally puts it behind a bearer token
(`--token-file` or `$INSTRUCTUE_SERVE_TOKEN`; `scoring_auth.py`), and wraps the app in
`BoundedRequests`, an ASGI layer that reads at most `RequestLimits.max_body_bytes` of a body (413
beyond, before the rest is read) and checks a JSON body with `records.check_request` before MLflow
parses it: nesting depth, records per request, and every record against the model's card (unknown
fields, wrong types, unknown categories, empty records: 4xx with the record and field named). So
every accepted record gets exactly one prediction. uvicorn runs the app, as `mlflow models serve`
does.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile

from components.registry.records import DEFAULT_LIMITS, RequestError, RequestLimits, check_request
from components.registry.scoring_auth import OPEN_PATHS, TOKEN_ENV, BearerAuth, TokenError, read_token

MODEL_PATH_ENV = "INSTRUCTUE_SERVE_MODEL_PATH"
PROTECT_HEALTH_ENV = "INSTRUCTUE_SERVE_PROTECT_HEALTH"
JSON = "application/json"


class BoundedRequests:
    """ASGI middleware: bounded, checked `/invocations` bodies; everything else passes through."""

    def __init__(self, app, card, limits: RequestLimits = DEFAULT_LIMITS):  # noqa: ANN001 - ASGI app
        self.app, self.card, self.limits = app, card, limits

    async def __call__(self, scope, receive, send):  # noqa: ANN001 - the ASGI signature
        if scope["type"] != "http" or scope["path"] != "/invocations" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        declared = headers.get(b"content-length", b"").decode("latin-1").strip()
        limit = self.limits.max_body_bytes
        if declared.isdigit() and int(declared) > limit:
            if await _drain(receive):
                await _reply(send, 413, f"the body is {int(declared):,} bytes; the limit is {limit:,}")
            return None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > limit:
                if await _drain(receive):
                    await _reply(send, 413, f"the body is over the limit of {limit:,} bytes")
                return None
            if not message.get("more_body", False):
                break
        mime = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if mime == JSON:
            try:
                check_request(self.card, bytes(body), self.limits)
            except RequestError as e:
                return await _reply(send, e.status, str(e))
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        return await self.app(scope, replay, send)


async def _drain(receive) -> bool:  # noqa: ANN001
    """Read the rest of a refused body without keeping it (memory stays flat), so the client, still
    sending, reads our 413 instead of a reset connection; False if the client went away."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        if not message.get("more_body", False):
            return True


async def _reply(send, status: int, message: str) -> None:  # noqa: ANN001
    """An error in MLflow's shape (`error_code`, `message`), so clients read every refusal alike."""
    code = {413: "RESOURCE_LIMIT_EXCEEDED", 422: "INVALID_PARAMETER_VALUE"}.get(status, "BAD_REQUEST")
    body = json.dumps({"error_code": code, "message": message}).encode()
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app():
    """The app for uvicorn's factory mode: the downloaded version named by `MODEL_PATH_ENV`, behind
    a bearer token when `$INSTRUCTUE_SERVE_TOKEN` holds one (`scoring_auth.py`)."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_PATH_ENV])
    card = model.unwrap_python_model().served.card
    app = BoundedRequests(scoring_server.init(model), card)
    token = read_token()
    if token is None:
        return app
    open_paths = frozenset() if os.environ.get(PROTECT_HEALTH_ENV) == "1" else OPEN_PATHS
    return BearerAuth(app, token, open_paths)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="serve a registry version with bounded requests")
    p.add_argument("model_uri")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5001)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--token-file", default=None, help=f"bearer token file (else ${TOKEN_ENV}; neither: open)")
    p.add_argument("--protect-health", action="store_true", help="/ping and /health need the token too")
    args = p.parse_args(argv)
    try:
        token = read_token(args.token_file)
    except TokenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if token is not None:  # the factory (and uvicorn's worker processes) read it from the environment
        os.environ[TOKEN_ENV] = token
        os.environ[PROTECT_HEALTH_ENV] = "1" if args.protect_health else "0"
        open_paths = "none" if args.protect_health else ", ".join(sorted(OPEN_PATHS))
        print(f"bearer token required on every path (open: {open_paths})", file=sys.stderr)

    import mlflow
    import uvicorn
    from mlflow.exceptions import MlflowException

    folder = tempfile.mkdtemp(prefix="instructue-serve-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=args.model_uri, dst_path=folder)
    except MlflowException as e:
        print(f"error: cannot serve {args.model_uri}: {e.message}", file=sys.stderr)
        return 2
    os.environ[MODEL_PATH_ENV] = local
    uvicorn.run("components.registry.scoring_app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="info")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
