"""EndpointWriter against a scripted OpenAI-compatible server on 127.0.0.1 (no real endpoint needed).

Each test sets the server's `script(payload, n, headers)`: n counts the calls carrying the same
prompt, so "fail the first time, then answer" is per request even when requests run concurrently.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from components.userqa.endpoint_writer import (
    RETRY_TEMPERATURE,
    EndpointError,
    EndpointWriter,
    chat_completions_url,
)
from components.userqa.records import AnswerRequest, Facts, Window

pytestmark = pytest.mark.unit

KEY_ENV, SECRET = "INSTRUCTUE_ENDPOINT_KEY", "sk-test-5ecret-do-not-leak"
VOCABULARY = frozenset({"Comedy", "Drama", "Horror"})


def request(user: int) -> AnswerRequest:
    statement = f"The user rated {10 + user} movies."
    facts = Facts(user, "activity", Window.PROFILE, (statement,), frozenset(), (float(10 + user),))
    return AnswerRequest(user, "activity", "How active is this user?", facts, reference=statement)


REQUESTS = [request(u) for u in range(12)]


def rated(payload: dict) -> str:
    return re.search(r"rated (\d+) movies", payload["messages"][-1]["content"]).group(1)


def good(payload: dict) -> dict:
    return reply(f"The user has rated {rated(payload)} movies in all.")


def reply(content, status: int = 200, delay: float = 0.0, headers=None) -> dict:
    body = content if isinstance(content, bytes) else None
    if body is None:
        body = json.dumps(
            {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
                "usage": {"completion_tokens": 9},
            }
        ).encode()
    return {"status": status, "body": body, "delay": delay, "headers": headers or {}}


class Server:
    def __init__(self):
        self.script = lambda payload, n, headers: good(payload)
        self.lock = threading.Lock()
        self.payloads, self.auth, self.per_prompt = [], [], Counter()
        self.in_flight = self.max_in_flight = 0
        self.paths = []
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = payload["messages"][-1]["content"]
                with state.lock:
                    state.in_flight += 1
                    state.max_in_flight = max(state.max_in_flight, state.in_flight)
                    state.payloads.append(payload)
                    state.auth.append(self.headers.get("Authorization"))
                    state.paths.append(self.path)
                    state.per_prompt[prompt] += 1
                    n = state.per_prompt[prompt]
                try:
                    out = state.script(payload, n, self.headers)
                    time.sleep(out["delay"])
                finally:
                    # counted out before the reply goes: a client that has read it may send its next
                    # request at once, and that handler must not find this one still counted
                    with state.lock:
                        state.in_flight -= 1
                try:
                    self.send_response(out["status"])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out["body"])))
                    for k, v in out["headers"].items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(out["body"])
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (timeout tests)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()


@pytest.fixture
def server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(KEY_ENV, SECRET)
    s = Server()
    yield s
    s.close()


def writer_for(server, **options) -> EndpointWriter:
    options = {"timeout_s": 2.0, "backoff_s": 0.01, "max_retries": 2, **options}
    return EndpointWriter(server.url, model="test-model", **options)


def test_good_replies_pass_in_order(server):
    writer = writer_for(server, max_in_flight=4)
    answers = writer.write(REQUESTS, VOCABULARY)
    assert [a.text for a in answers] == [f"The user has rated {10 + u} movies in all." for u in range(12)]
    assert all(a.passed and a.attempts == 1 and a.writer == "endpoint:test-model" for a in answers)
    assert writer.http_calls == 12 and writer.retries == 0 and writer.generated_tokens == 12 * 9
    assert set(server.paths) == {"/v1/chat/completions"}
    first = server.payloads[0]
    assert first["model"] == "test-model" and first["max_tokens"] == 120 and first["temperature"] == 0.0
    assert [m["role"] for m in first["messages"]] == ["system", "user"]


def test_order_is_kept_when_replies_come_back_shuffled(server):
    server.script = lambda p, n, h: {**good(p), "delay": 0.01 * ((int(rated(p)) * 7) % 5)}
    answers = writer_for(server, max_in_flight=6).write(REQUESTS, VOCABULARY)
    assert [rated_in(a.text) for a in answers] == [str(10 + u) for u in range(12)]


def rated_in(text: str) -> str:
    return re.search(r"rated (\d+)", text).group(1)


def test_concurrency_never_exceeds_max_in_flight(server):
    server.script = lambda p, n, h: {**good(p), "delay": 0.05}
    answers = writer_for(server, max_in_flight=3).write(REQUESTS, VOCABULARY)
    assert all(a.passed for a in answers)
    assert server.max_in_flight == 3  # reached, never passed


def test_the_key_is_sent_as_bearer_read_at_call_time_and_never_shown(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    writer = writer_for(server)
    writer.write(REQUESTS[:1], VOCABULARY)
    monkeypatch.setenv(KEY_ENV, SECRET)  # set after the writer was built
    writer.write(REQUESTS[:1], VOCABULARY)
    assert server.auth == [None, f"Bearer {SECRET}"]
    assert SECRET not in repr(writer) and SECRET not in str(vars(writer))


def test_a_401_is_not_retried_and_says_which_variable_to_fix(server):
    # the server echoes the key back: the error must not carry it
    server.script = lambda p, n, h: reply(f"invalid key {h['Authorization']}".encode(), status=401)
    writer = writer_for(server, max_in_flight=1)
    with pytest.raises(EndpointError) as caught:
        writer.write(REQUESTS[:5], VOCABULARY)
    message = str(caught.value)
    assert "401" in message and KEY_ENV in message and "***" in message
    assert SECRET not in message and SECRET not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert len(server.payloads) == 1  # no retry, and the other requests never started


def test_a_404_names_the_url_and_model(server):
    server.script = lambda p, n, h: reply(b'{"error": "model not found"}', status=404)
    with pytest.raises(EndpointError, match=r"404.*/v1/chat/completions.*test-model"):
        writer_for(server).write(REQUESTS[:1], VOCABULARY)


def test_a_400_fails_that_request_only_without_retry(server):
    server.script = lambda p, n, h: reply(b"prompt too long", status=400) if rated(p) == "11" else good(p)
    answers = writer_for(server).write(REQUESTS[:3], VOCABULARY)
    assert [a.passed for a in answers] == [True, False, True]
    assert "HTTP 400" in answers[1].reason and "prompt too long" in answers[1].reason
    assert answers[1].attempts == 1 and answers[1].text == ""
    assert len(server.payloads) == 3


def test_a_500_then_success_is_retried(server):
    server.script = lambda p, n, h: reply(b"overloaded", status=500) if n == 1 else good(p)
    writer = writer_for(server)
    answers = writer.write(REQUESTS[:4], VOCABULARY)
    assert all(a.passed and a.attempts == 1 for a in answers)
    assert writer.http_calls == 8 and writer.retries == 4


def test_a_429_is_retried_after_the_servers_wait(server):
    server.script = lambda p, n, h: (
        reply(b"slow down", 429, headers={"Retry-After": "0.2"}) if n == 1 else good(p)
    )
    writer = writer_for(server)
    start = time.perf_counter()
    assert writer.write(REQUESTS[:1], VOCABULARY)[0].passed
    assert time.perf_counter() - start >= 0.2 and writer.retries == 1


def test_a_reply_slower_than_the_timeout_is_retried(server):
    server.script = lambda p, n, h: {**good(p), "delay": 0.8 if n == 1 else 0.0}
    writer = writer_for(server, timeout_s=0.3)
    answer = writer.write(REQUESTS[:1], VOCABULARY)[0]
    assert answer.passed and writer.retries == 1


def test_a_reply_that_always_hangs_fails_with_a_timeout_reason(server):
    server.script = lambda p, n, h: {**good(p), "delay": 0.8}
    writer = writer_for(server, timeout_s=0.3, max_retries=1)
    start = time.perf_counter()
    answer = writer.write(REQUESTS[:1], VOCABULARY)[0]
    assert time.perf_counter() - start < 1.5
    assert not answer.passed and answer.attempts == 1  # an outage is not regenerated
    assert "no reply" in answer.reason and "timed out" in answer.reason and "2 tries" in answer.reason


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html>Bad gateway</html>", "not JSON"),
        (b'{"choices": []}', "no choices"),
        (b'{"object": "error"}', "no choices"),
        (b'{"choices": [{"message": {"role": "assistant", "content": "  "}}]}', "empty content"),
        (b'{"choices": [{"message": {"role": "assistant", "content": null}}]}', "empty content"),
    ],
)
def test_a_malformed_reply_is_a_failed_attempt(server, body, why):
    server.script = lambda p, n, h: reply(body)
    writer = writer_for(server)
    answer = writer.write(REQUESTS[:1], VOCABULARY)[0]
    assert not answer.passed and answer.attempts == 2
    assert answer.reason.startswith("malformed reply: " + why)
    assert writer.retries == 0 and writer.http_calls == 2  # regenerated once, not retried


def test_a_malformed_reply_then_a_good_one_passes(server):
    server.script = lambda p, n, h: reply(b"not json") if n == 1 else good(p)
    answer = writer_for(server).write(REQUESTS[:1], VOCABULARY)[0]
    assert answer.passed and answer.attempts == 2 and "not JSON" in answer.extra["first_reason"]


def test_a_rejected_answer_is_sampled_again_once(server):
    server.script = lambda p, n, h: reply("The user loves Horror movies.") if n == 1 else good(p)
    answers = writer_for(server).write(REQUESTS[:2], VOCABULARY)
    assert all(a.passed and a.attempts == 2 for a in answers)
    assert "Horror" in answers[0].extra["first_reason"]
    retried = [p for p in server.payloads if "seed" in p]
    assert len(retried) == 2 and all(p["temperature"] == RETRY_TEMPERATURE for p in retried)


def test_an_answer_rejected_twice_keeps_its_last_text_and_reason(server):
    server.script = lambda p, n, h: reply(f"The user loves Horror, {n} times over.")
    answer = writer_for(server).write(REQUESTS[:1], VOCABULARY)[0]
    assert not answer.passed and answer.attempts == 2
    assert answer.text == "The user loves Horror, 2 times over." and "Horror" in answer.reason


def test_an_endpoint_that_stopped_answering_stops_the_write(server):
    server.script = lambda p, n, h: reply(b"down", status=503)
    writer = writer_for(server, max_retries=0, max_in_flight=2)
    requests = [request(u) for u in range(40)]
    with pytest.raises(EndpointError, match="stopped answering"):
        writer.write(requests, VOCABULARY)
    assert len(server.payloads) < len(requests)


def test_nothing_listening_is_a_connection_error(server):
    server.close()  # the port is free now: connections are refused
    answer = writer_for(server, max_retries=1).write(REQUESTS[:1], VOCABULARY)[0]
    assert not answer.passed and "no reply" in answer.reason and "Connection" in answer.reason


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("http://h:8000", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/v1", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/v1/", "http://h:8000/v1/chat/completions"),
        ("https://h/api/v1/chat/completions", "https://h/api/v1/chat/completions"),
    ],
)
def test_url_with_or_without_v1(url, endpoint):
    assert chat_completions_url(url) == endpoint


@pytest.mark.parametrize("url", ["h:8000/v1", "ftp://h/v1", "", "localhost"])
def test_a_url_that_is_not_http_is_refused(url):
    with pytest.raises(ValueError, match="not an http"):
        EndpointWriter(url, model="m")


def test_bad_options_are_all_named():
    with pytest.raises(ValueError, match=r"timeout_s=0.*max_in_flight=0.*backoff_s=-1.*model is empty"):
        EndpointWriter("http://h/v1", model="", timeout_s=0, max_in_flight=0, backoff_s=-1)


def test_no_requests_no_calls(server):
    assert writer_for(server).write([], VOCABULARY) == [] and server.payloads == []
