"""An answer writer that calls an OpenAI-compatible chat completions endpoint (a vLLM server...).

    export INSTRUCTUE_ENDPOINT_KEY=...  # optional: sent as `Authorization: Bearer`, read at each write
    writer = EndpointWriter("http://gpu-box:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")
    answers = writer.write(requests, vocabulary)  # same order as requests

`url` is the server's base: `http://host:8000`, `http://host:8000/v1` (with or without a trailing
slash) or the full `.../v1/chat/completions`; requests go to `<base>/v1/chat/completions`.

Each request's prompt is the local writer's (`prompts.build_messages`). Up to `max_in_flight` HTTP
requests run at once (stdlib `urllib`, one thread each). Timeouts, connection errors, 429 and 5xx
are retried with exponential backoff; other 4xx are not: 401, 403 and 404 mean the key, the URL or
the model is wrong and stop the whole write with `EndpointError`; 400, 413, 422... fail that request
only. Each answer is verified like the local writer's; a malformed reply (not JSON, no choices,
empty content) or a rejected answer is generated again once, sampled. A request that still fails
comes back with passed=False and the reason, and the synthesis stage falls back to the reference.
If many requests in a row get no answer at all, the endpoint is down: the write stops with
`EndpointError` rather than waiting out every timeout of a long run.

The key never leaves the Authorization header: it is not stored on the writer, logged, or put in
reprs, reasons or exception messages (a server echoing it back is redacted).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from components.userqa.prompts import build_messages
from components.userqa.records import Answer, AnswerRequest
from components.userqa.verify import normalise_answer, verify

log = logging.getLogger(__name__)

RETRY_TEMPERATURE = 0.7  # a rejected greedy answer would come back the same; retries sample
MAX_RETRY_AFTER_S = 60.0  # a server's Retry-After is obeyed up to this


class EndpointError(RuntimeError):
    """The endpoint refuses this writer (key, URL, model) or stopped answering; the message says the fix."""


class _RequestFailed(Exception):
    """This request got no usable answer; the message is the answer's reason."""


class _Unreachable(_RequestFailed):
    """No reply after every retry: counts towards deciding that the endpoint is down."""


class _Malformed(_RequestFailed):
    """A reply without an answer in it: worth generating again."""


def chat_completions_url(url: str) -> str:
    """`<base>/v1/chat/completions` for a base given with or without `/v1` or the full path."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"endpoint url {url!r} is not an http(s) URL; use e.g. http://localhost:8000/v1")
    base = url.strip().rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/chat/completions"


class EndpointWriter:
    """Writes answers with a chat completions endpoint; implements `AnswerWriter`.

    Args:
        url: the server's base URL (see the module docstring).
        model: the model name the server serves.
        api_key_env: the environment variable holding the key; unset or empty sends no key.
        timeout_s: seconds one HTTP request may wait for the server (each socket operation).
        max_retries: retries of one HTTP request after a timeout, connection error, 429 or 5xx.
        max_in_flight: HTTP requests at once.
        max_tokens: the longest answer, in tokens.
        temperature: 0 for greedy first attempts; retries sample at `RETRY_TEMPERATURE` if 0.
        backoff_s: the first retry's wait; each further retry waits twice as long (with jitter).
        max_attempts: generations per request, the first included (2: one regeneration on failure).

    Raises:
        ValueError: a bad option (all named in one message).
    """

    def __init__(
        self,
        url: str,
        model: str,
        api_key_env: str = "INSTRUCTUE_ENDPOINT_KEY",
        timeout_s: float = 30.0,
        max_retries: int = 3,
        max_in_flight: int = 8,
        max_tokens: int = 120,
        temperature: float = 0.0,
        backoff_s: float = 0.5,
        max_attempts: int = 2,
    ):
        minimums = {
            "timeout_s": (timeout_s, 0.001),
            "max_retries": (max_retries, 0),
            "max_in_flight": (max_in_flight, 1),
            "max_tokens": (max_tokens, 1),
            "temperature": (temperature, 0),
            "backoff_s": (backoff_s, 0),
            "max_attempts": (max_attempts, 1),
        }
        problems = [f"{k}={v} (use {low} or more)" for k, (v, low) in minimums.items() if v < low]
        if not model:
            problems.append("model is empty (use the name the server serves)")
        if problems:
            raise ValueError("EndpointWriter: bad options: " + "; ".join(problems))
        self.url = chat_completions_url(url)
        self.model, self.api_key_env, self.name = model, api_key_env, f"endpoint:{model}"
        self.timeout_s, self.max_retries, self.max_in_flight = timeout_s, max_retries, max_in_flight
        self.max_tokens, self.temperature, self.backoff_s = max_tokens, temperature, backoff_s
        self.max_attempts = max_attempts
        # this many requests in a row without any reply: the endpoint is down, not busy
        self.max_consecutive_unreachable = max(10, 2 * max_in_flight)
        self._lock = threading.Lock()
        self.http_calls = 0  # HTTP requests sent, retries included
        self.retries = 0
        self.generated_tokens = 0  # from the replies' `usage.completion_tokens`, when given
        self.seconds = 0.0  # wall time spent in `write`

    def __repr__(self) -> str:
        return f"EndpointWriter(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def write(self, requests: Sequence[AnswerRequest], vocabulary: frozenset[str]) -> list[Answer]:
        """One answer per request, in order.

        Raises:
            EndpointError: the endpoint refused the key, URL or model, or stopped answering.
        """
        if not requests:
            return []
        start = time.perf_counter()
        run = _Run(key=os.environ.get(self.api_key_env) or None)
        pool = ThreadPoolExecutor(
            max_workers=min(self.max_in_flight, len(requests)), thread_name_prefix="endpoint"
        )
        try:
            futures = [pool.submit(self._answer, r, vocabulary, run) for r in requests]
            answers = [f.result() for f in futures]
        except BaseException:
            run.abort.set()  # running requests stop at their next retry; queued ones never start
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            with self._lock:
                self.seconds += time.perf_counter() - start
        n_passed = sum(a.passed for a in answers)
        log.info(
            "%s wrote %d answers: %d passed, %d failed",
            self.name,
            len(answers),
            n_passed,
            len(answers) - n_passed,
        )
        return answers

    # -- one request: attempts, each one HTTP exchange with retries ------------------------------------------
    def _answer(self, request: AnswerRequest, vocabulary: frozenset[str], run: _Run) -> Answer:
        messages = build_messages(request)
        extra: dict = {}
        text, reason = "", ""
        for attempt in range(1, self.max_attempts + 1):
            payload = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens}
            if attempt == 1:
                payload["temperature"] = self.temperature
            else:
                payload["temperature"] = self.temperature or RETRY_TEMPERATURE
                payload["seed"] = attempt - 1  # another sample than the last, reproducible where supported
            try:
                raw = self._complete(payload, run)
            except _Malformed as e:
                ok, reason = False, str(e)
            except _RequestFailed as e:  # retrying would meet the same refusal or the same outage
                return Answer("", self.name, False, str(e), attempts=attempt, extra=extra)
            else:
                text = normalise_answer(raw)
                ok, reason = verify(text, request.facts, vocabulary)
            if ok:
                return Answer(text, self.name, True, "", attempts=attempt, extra=extra)
            extra.setdefault("first_reason", reason)
        return Answer(text, self.name, False, reason, attempts=self.max_attempts, extra=extra)

    def _complete(self, payload: dict, run: _Run) -> str:
        """The reply's answer text; retries transient failures; raises _RequestFailed or EndpointError."""
        body = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if run.key:
            headers["Authorization"] = f"Bearer {run.key}"
        last, retry_after = "", 0.0
        for try_ in range(self.max_retries + 1):
            if try_:
                with self._lock:
                    self.retries += 1
                delay = max(retry_after, self.backoff_s * 2 ** (try_ - 1) * random.uniform(0.5, 1.5))
                log.warning("%s: %s; retry %d/%d in %.2f s", self.url, last, try_, self.max_retries, delay)
                if run.abort.wait(delay):
                    break
            if run.abort.is_set():
                break
            with self._lock:
                self.http_calls += 1
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as e:
                detail = run.redact(_snippet(_read(e)))
                if e.code == 429 or e.code >= 500:
                    last = f"HTTP {e.code} ({detail})"
                    retry_after = _retry_after(e.headers.get("Retry-After"))
                    continue
                self._refuse(e.code, detail, run)  # raises EndpointError for 401, 403, 404
                raise _RequestFailed(f"HTTP {e.code} from the endpoint, not retried: {detail}") from None
            except (OSError, http.client.HTTPException) as e:  # timeouts, refused/reset connections
                last = run.redact(_describe(e))
                continue
            run.replied()
            return self._content(raw, run)
        if run.abort.is_set():
            raise _RequestFailed("stopped: another request found the endpoint unusable")
        failures = run.unreachable()
        if failures >= self.max_consecutive_unreachable:
            raise EndpointError(
                f"{self.url} stopped answering: {failures} requests in a row got no reply after "
                f"{self.max_retries + 1} tries each (last: {last}). Check that the server is up and "
                f"reachable, or raise timeout_s (now {self.timeout_s:g} s) if it is overloaded."
            )
        raise _Unreachable(f"no reply from the endpoint after {self.max_retries + 1} tries: {last}")

    def _refuse(self, code: int, detail: str, run: _Run) -> None:
        fixes = {
            401: f"the key was refused: set ${self.api_key_env} to a valid key"
            + ("" if run.key else f" (${self.api_key_env} is not set, so no key was sent)"),
            403: f"the key in ${self.api_key_env} is not allowed to use model {self.model!r}",
            404: f"check the url (requests go to {self.url}) and that the server serves model {self.model!r}",
        }
        if code in fixes:
            run.abort.set()
            raise EndpointError(f"{self.url} answered HTTP {code} ({detail}): {fixes[code]}.") from None

    def _content(self, raw: bytes, run: _Run) -> str:
        try:
            reply = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Malformed(f"malformed reply: not JSON ({run.redact(_snippet(raw))})") from None
        if not isinstance(reply, dict) or not isinstance(reply.get("choices"), list) or not reply["choices"]:
            raise _Malformed(f"malformed reply: no choices ({run.redact(_snippet(raw))})")
        choice = reply["choices"][0]
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str) or not content.strip():
            raise _Malformed(f"malformed reply: empty content ({run.redact(_snippet(raw))})")
        usage = reply.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            with self._lock:
                self.generated_tokens += usage["completion_tokens"]
        return content


class _Run:
    """State shared by one `write` call's threads: the key, the abort flag, the outage counter."""

    def __init__(self, key: str | None):
        self.key, self.abort = key, threading.Event()
        self._lock, self._unreachable = threading.Lock(), 0

    def redact(self, text: str) -> str:
        return text.replace(self.key, "***") if self.key else text

    def replied(self) -> None:
        with self._lock:
            self._unreachable = 0

    def unreachable(self) -> int:
        with self._lock:
            self._unreachable += 1
            return self._unreachable


def _read(e: urllib.error.HTTPError) -> bytes:
    try:
        return e.read()
    except (OSError, http.client.HTTPException):
        return b""


def _snippet(raw: bytes, limit: int = 200) -> str:
    text = raw.decode("utf-8", errors="replace").strip().replace("\n", " ")
    if not text:
        return "empty body"
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(e: BaseException) -> str:
    reason = getattr(e, "reason", None)  # URLError wraps the socket error
    inner = reason if isinstance(reason, BaseException) else e
    if isinstance(inner, TimeoutError):
        return "timed out"
    return f"{type(inner).__name__}: {inner}" if str(inner) else type(inner).__name__


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S) if value else 0.0
    except ValueError:  # an HTTP date: rare from inference servers; plain backoff instead
        return 0.0
