"""LocalLLMWriter's mechanics: batching, order, left padding, attempts, verification, counters.

The tiny random backbone writes garbage, which verification must reject; a scripted stand-in model
(anything with `generate`) writes chosen answers, so passing and retrying can be tested exactly.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer

from components.userqa.llm_writer import RETRY_TEMPERATURE, LocalLLMWriter
from components.userqa.prompts import GENERAL_QUESTION, SYSTEM, build_messages, render_plain
from components.userqa.records import AnswerRequest, Facts, Window
from components.userqa.verify import verify

pytestmark = pytest.mark.unit

VOCABULARY = frozenset({"Comedy", "Drama", "Horror", "Sci-Fi"})


def request(user: int, n_rated: int, padding_words: int = 0, instruction="What does this user watch?"):
    statements = [f"The user rated {n_rated} movies."] + ["They like Comedy a great deal."] * padding_words
    facts = Facts(
        user, "activity", Window.PROFILE, tuple(statements), frozenset({"Comedy"}), (float(n_rated),)
    )
    return AnswerRequest(user, "activity", instruction, facts, reference=" ".join(statements))


# lengths vary so that batches need padding; numbers identify each request in its answer
REQUESTS = [request(u, 10 + u, padding_words=(u * 3) % 5) for u in range(7)]


class ScriptedLM:
    """A stand-in causal LM: answers each prompt with `reply(prompt, do_sample)` and records each call."""

    def __init__(self, tokenizer, reply):
        self.tokenizer, self.reply, self.calls = tokenizer, reply, []
        self.generation_config = SimpleNamespace(eos_token_id=tokenizer.sep_token_id)

    def generate(
        self, input_ids, attention_mask, max_new_tokens, pad_token_id, eos_token_id, do_sample, **kw
    ):
        self.calls.append({"input_ids": input_ids, "mask": attention_mask, "do_sample": do_sample, **kw})
        rows = []
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            prompt = self.tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
            answer = self.tokenizer(self.reply(prompt, do_sample), add_special_tokens=False)["input_ids"]
            rows.append(answer[:max_new_tokens] + [self.tokenizer.sep_token_id])
        width = max(map(len, rows))
        new = torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows])
        return torch.cat([input_ids, new], dim=1)


def rated(prompt: str) -> str:
    return re.search(r"rated (\d+) movies", prompt).group(1)


@pytest.fixture
def tokenizer(tiny_backbone):
    return AutoTokenizer.from_pretrained(tiny_backbone, local_files_only=True)


def scripted(tokenizer, reply, **options):
    lm = ScriptedLM(tokenizer, reply)
    return lm, LocalLLMWriter.from_loaded(lm, tokenizer, name="local:scripted", **options)


def test_good_answers_pass_first_time_in_order_and_in_batches(tokenizer):
    lm, writer = scripted(tokenizer, lambda p, s: f"The user has rated {rated(p)} movies.", batch_size=3)
    answers = writer.write(REQUESTS, VOCABULARY)
    assert [a.text for a in answers] == [f"the user has rated {10 + u} movies." for u in range(7)]
    assert all(a.passed and a.reason == "" and a.attempts == 1 for a in answers)
    assert {a.writer for a in answers} == {"local:scripted"}
    assert [len(c["input_ids"]) for c in lm.calls] == [3, 3, 1]
    assert not any(c["do_sample"] for c in lm.calls)  # greedy by default


def test_batches_are_left_padded(tokenizer):
    lm, writer = scripted(tokenizer, lambda p, s: f"The user has rated {rated(p)} movies.", batch_size=4)
    writer.write(REQUESTS, VOCABULARY)
    padded = 0
    for call in lm.calls:
        mask, ids = call["mask"], call["input_ids"]
        assert bool((mask[:, 1:] >= mask[:, :-1]).all()), "padding must come before the prompt"
        assert bool(mask[:, -1].all())
        assert bool((ids[mask == 0] == tokenizer.pad_token_id).all())
        padded += int((mask == 0).sum())
    assert padded > 0


def test_a_failed_answer_is_sampled_again_and_only_it(tokenizer):
    # requests with an even user id get a hallucinated genre on the greedy attempt
    def reply(prompt, sample):
        n = rated(prompt)
        if not sample and int(n) % 2 == 0:
            return f"The user has rated {n} Horror movies."
        return f"The user has rated {n} movies."

    lm, writer = scripted(tokenizer, reply, batch_size=16, seed=3)
    answers = writer.write(REQUESTS, VOCABULARY)
    assert all(a.passed for a in answers)
    assert [a.attempts for a in answers] == [2, 1, 2, 1, 2, 1, 2]
    assert "horror" in answers[0].extra["first_reason"].lower()
    assert "first_reason" not in answers[1].extra
    greedy, sampled = lm.calls
    assert len(greedy["input_ids"]) == 7 and len(sampled["input_ids"]) == 4
    assert sampled["do_sample"] and sampled["temperature"] == RETRY_TEMPERATURE


def test_an_answer_failing_every_attempt_keeps_the_last_text_and_the_reason(tokenizer):
    lm, writer = scripted(tokenizer, lambda p, s: f"The user has rated {'99' if s else '98'} movies.")
    answers = writer.write(REQUESTS[:2], VOCABULARY)
    for a in answers:
        assert not a.passed and a.attempts == 2
        assert a.text == "the user has rated 99 movies."
        assert "'99'" in a.reason
        assert "'98'" in a.extra["first_reason"]


def test_max_attempts_one_never_regenerates(tokenizer):
    lm, writer = scripted(tokenizer, lambda p, s: "Horror, Horror and Horror.", max_attempts=1)
    answers = writer.write(REQUESTS, VOCABULARY)
    assert len(lm.calls) == 1
    assert all(not a.passed and a.attempts == 1 and "Horror" in a.reason for a in answers)


def test_sampling_from_the_start_when_temperature_is_set(tokenizer):
    lm, writer = scripted(tokenizer, lambda p, s: f"The user has rated {rated(p)} movies.", temperature=0.3)
    writer.write(REQUESTS[:2], VOCABULARY)
    assert lm.calls[0]["do_sample"] and lm.calls[0]["temperature"] == 0.3


def test_counters_add_up(tokenizer):
    lm, writer = scripted(tokenizer, lambda p, s: f"The user has rated {rated(p)} movies.")
    answers = writer.write(REQUESTS, VOCABULARY)
    assert writer.generated_tokens == sum(a.extra["tokens"] for a in answers) > 7
    assert writer.seconds > 0
    writer.write(REQUESTS[:1], VOCABULARY)
    assert writer.generated_tokens == sum(a.extra["tokens"] for a in answers) + answers[0].extra["tokens"]


def test_no_requests_no_calls(tokenizer):
    lm, writer = scripted(tokenizer, lambda p, s: "unused")
    assert writer.write([], VOCABULARY) == [] and lm.calls == []


def test_prompt_holds_the_instruction_and_every_statement(tokenizer):
    _, writer = scripted(tokenizer, lambda p, s: "unused")
    r = request(1, 42, padding_words=1)
    prompt = writer.prompt(r)  # the BERT tokenizer has no chat template: plain text
    assert prompt == render_plain(build_messages(r))
    assert prompt.startswith(SYSTEM) and prompt.endswith("Answer:")
    assert r.instruction in prompt and all(s in prompt for s in r.facts.statements)
    assert GENERAL_QUESTION in writer.prompt(request(1, 42, instruction=None))


def test_a_chat_template_is_used_when_the_tokenizer_has_one(tokenizer):
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    lm, writer = scripted(tokenizer, lambda p, s: f"The user has rated {rated(p)} movies.")
    prompt = writer.prompt(REQUESTS[0])
    assert prompt.startswith("<system>" + SYSTEM) and prompt.endswith("<assistant>")
    assert writer.write(REQUESTS[:2], VOCABULARY)[1].passed
    ids, mask = lm.calls[0]["input_ids"], lm.calls[0]["mask"]
    assert tokenizer.cls_token_id not in ids[mask.bool()].tolist()  # the template's tokens only


def test_the_prompt_itself_would_be_rejected_as_an_echo():
    r = request(1, 42)
    for text in (render_plain(build_messages(r)), build_messages(r)[1]["content"]):
        ok, reason = verify(text, r.facts, VOCABULARY)
        assert not ok and "echoes the prompt" in reason


def test_bad_options_are_all_named(tokenizer):
    with pytest.raises(ValueError, match=r"batch_size=0.*max_new_tokens=0.*temperature=-1.*max_attempts=0"):
        LocalLLMWriter.from_loaded(
            None, tokenizer, "x", batch_size=0, max_new_tokens=0, temperature=-1, max_attempts=0
        )


def test_a_tokenizer_without_pad_or_eos_is_refused(tokenizer):
    tokenizer.pad_token = None
    with pytest.raises(ValueError, match="neither a pad nor an eos"):
        LocalLLMWriter.from_loaded(None, tokenizer, "x")


# -- the tiny random backbone, loaded through resolve_backbone + load_backbone ---------------------------
def test_random_backbone_garbage_is_rejected_after_every_attempt(tiny_backbone, tmp_path):
    # two new tokens cannot make the three words an answer needs: every attempt must fail
    writer = LocalLLMWriter(
        str(tiny_backbone), cache_dir=tmp_path, batch_size=3, max_new_tokens=2, device="cpu"
    )
    assert writer.name == f"local:{tiny_backbone}"
    answers = writer.write(REQUESTS, VOCABULARY)
    assert len(answers) == len(REQUESTS)
    assert all(not a.passed and a.attempts == 2 and "too short" in a.reason for a in answers)
    assert writer.generated_tokens == sum(a.extra["tokens"] for a in answers)
    assert all(2 <= a.extra["tokens"] <= 4 for a in answers)


def test_random_backbone_is_reproducible_for_a_seed(tiny_backbone, tmp_path):
    def run(seed):
        writer = LocalLLMWriter(
            str(tiny_backbone), cache_dir=tmp_path, batch_size=4, max_new_tokens=8, device="cpu", seed=seed
        )
        return writer.write(REQUESTS, VOCABULARY)

    first, again = run(0), run(0)
    assert [(a.text, a.passed, a.reason, a.attempts) for a in first] == [
        (a.text, a.passed, a.reason, a.attempts) for a in again
    ]
    # word salad: rejected as ungrounded (or for a stray number), so every request was sampled again
    assert sum(a.passed for a in first) <= 1
    assert any("ungrounded" in a.reason for a in first)
    for a, r in zip(first, REQUESTS, strict=True):
        assert (a.passed, a.reason) == verify(a.text, r.facts, VOCABULARY)
        assert a.passed or a.attempts == 2
    assert [a.text for a in run(1)] != [a.text for a in first]  # a greedy first attempt, then seeded sampling
