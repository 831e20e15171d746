"""An answer writer that calls an OpenAI-compatible chat completions endpoint (a vLLM server...).

    export INSTRUCTUE_ENDPOINT_KEY=...  # optional: sent as `Authorization: Bearer`, read at each write
    writer = EndpointWriter("http://gpu-box:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")
    answers = writer.write(requests, vocabulary)  # same order as requests

`url` is the server's base: `http://host:8000`, `http://host:8000/v1` (with or without a trailing
slash) or the full `.../v1/chat/completions`; requests go to `<base>/v1/chat/completions`.

Each request's prompt is the local writer's (`prompts.build_messages`). Up to `max_in_flight` HTTP
requests run at once (one thread each, sharing one `httpx` client and its kept-alive connections).
Timeouts, connection errors, 429 and 5xx are retried by `tenacity` with exponential backoff (a
server's Retry-After obeyed up to a minute); other 4xx are not: 401, 403 and 404 mean the key, the URL or
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

import json
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import tenacity

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


class _Transient(Exception):
    """A timeout, a connection error, 429 or 5xx: worth sending again after a wait."""

    def __init__(self, message: str, retry_after: float = 0.0):
        super().__init__(message)
        self.retry_after = retry_after


class _Aborted(Exception):
    """Another request of the same write found the endpoint unusable: stop waiting."""


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
        in_flight = min(self.max_in_flight, len(requests))
        client = httpx.Client(
            timeout=self.timeout_s, limits=httpx.Limits(max_connections=in_flight), follow_redirects=False
        )
        run = _Run(os.environ.get(self.api_key_env) or None, client)
        pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="endpoint")
        try:
            futures = [pool.submit(self._answer, r, vocabulary, run) for r in requests]
            answers = [f.result() for f in futures]
        except BaseException:
            run.abort.set()  # running requests stop at their next retry; queued ones never start
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            client.close()
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
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Transient),
            before_sleep=self._before_retry,
            sleep=run.sleep,
            reraise=True,
        )
        try:
            raw = retrying(self._post, body, headers, run)
        except _Aborted:
            raise _RequestFailed("stopped: another request found the endpoint unusable") from None
        except _Transient as e:
            failures = run.unreachable()
            if failures >= self.max_consecutive_unreachable:
                raise EndpointError(
                    f"{self.url} stopped answering: {failures} requests in a row got no reply after "
                    f"{self.max_retries + 1} tries each (last: {e}). Check that the server is up and "
                    f"reachable, or raise timeout_s (now {self.timeout_s:g} s) if it is overloaded."
                ) from None
            raise _Unreachable(
                f"no reply from the endpoint after {self.max_retries + 1} tries: {e}"
            ) from None
        run.replied()
        return self._content(raw, run)

    def _post(self, body: bytes, headers: dict[str, str], run: _Run) -> bytes:
        """One HTTP exchange: the reply's body, or _Transient / _RequestFailed / EndpointError."""
        if run.abort.is_set():
            raise _Aborted
        with self._lock:
            self.http_calls += 1
        try:
            resp = run.client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise _Transient("timed out") from None
        except httpx.TransportError as e:  # refused / reset connections, protocol errors
            raise _Transient(run.redact(_describe(e))) from None
        if resp.status_code < 400:
            return resp.content
        detail = run.redact(_snippet(resp.content))
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Transient(
                f"HTTP {resp.status_code} ({detail})", _retry_after(resp.headers.get("Retry-After"))
            )
        self._refuse(resp.status_code, detail, run)  # raises EndpointError for 401, 403, 404
        raise _RequestFailed(f"HTTP {resp.status_code} from the endpoint, not retried: {detail}")

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Exponential backoff with jitter, or the server's Retry-After when that is longer."""
        error = state.outcome.exception() if state.outcome else None
        retry_after = error.retry_after if isinstance(error, _Transient) else 0.0
        return max(retry_after, self.backoff_s * 2 ** (state.attempt_number - 1) * random.uniform(0.5, 1.5))

    def _before_retry(self, state: tenacity.RetryCallState) -> None:
        with self._lock:
            self.retries += 1
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s: %s; retry %d/%d in %.2f s", self.url, error, state.attempt_number, self.max_retries,
                    delay)  # fmt: skip

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
    """State shared by one `write` call's threads: the key, the HTTP client, the abort flag, the
    outage counter."""

    def __init__(self, key: str | None, client: httpx.Client):
        self.key, self.client, self.abort = key, client, threading.Event()
        self._lock, self._unreachable = threading.Lock(), 0

    def sleep(self, seconds: float) -> None:
        """tenacity's wait between tries, cut short when another request aborts the write."""
        if self.abort.wait(seconds):
            raise _Aborted

    def redact(self, text: str) -> str:
        return text.replace(self.key, "***") if self.key else text

    def replied(self) -> None:
        with self._lock:
            self._unreachable = 0

    def unreachable(self) -> int:
        with self._lock:
            self._unreachable += 1
            return self._unreachable


def _snippet(raw: bytes, limit: int = 200) -> str:
    text = raw.decode("utf-8", errors="replace").strip().replace("\n", " ")
    if not text:
        return "empty body"
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S) if value else 0.0
    except ValueError:  # an HTTP date: rare from inference servers; plain backoff instead
        return 0.0
