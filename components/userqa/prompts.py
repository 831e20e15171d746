"""The prompt every LLM answer writer sends: rewrite a user's facts as a fluent answer, nothing more.

    from components.userqa.prompts import build_messages, render_plain
    messages = build_messages(request)  # [{"role": "system", ...}, {"role": "user", ...}]
    text = render_plain(messages)  # for a tokenizer without a chat template

The local writer (`llm_writer.py`) and the endpoint writer (`endpoint_writer.py`) share it, so an
answer's wording differs between writers only because the models differ.
"""

from __future__ import annotations

from components.userqa.records import AnswerRequest

# The general family has no instruction (InstructUE 3.2: I_k = empty); the writer still needs a question.
GENERAL_QUESTION = "Describe this user."

SYSTEM = (
    "You rewrite facts about a user as a short, fluent answer to a question. "
    "Use only the facts given: do not add any other genre, category, number or trend. "
    "Answer in one to three sentences and refer to the person as 'the user'."
)


def build_messages(request: AnswerRequest) -> list[dict]:
    """Chat messages (OpenAI format) asking for the request's facts rewritten as an answer."""
    question = request.instruction or GENERAL_QUESTION
    facts = "\n".join(f"- {s}" for s in request.facts.statements)
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Question: {question}\nFacts:\n{facts}"},
    ]


def render_plain(messages: list[dict]) -> str:
    """One plain-text prompt for a model without a chat template, ending where the answer starts."""
    body = "\n\n".join(m["content"] for m in messages)
    return f"{body}\n\nAnswer:"
