"""Answer writers behind one interface (`records.AnswerWriter`).

- `TemplateWriter`: the facts' own sentences, deterministic and fast (the default, and the tests');
- `LocalLLMWriter` (`llm_writer.py`): a local causal LM turns the facts into a fluent answer;
- `EndpointWriter` (`endpoint_writer.py`): an OpenAI-compatible HTTP endpoint (a vLLM server...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from components.userqa.records import Answer, AnswerRequest


def reference_answer(statements: Sequence[str]) -> str:
    return " ".join(statements)


class TemplateWriter:
    name = "template"

    def write(self, requests: Sequence[AnswerRequest], vocabulary: frozenset[str]) -> list[Answer]:
        return [Answer(text=r.reference, writer=self.name, passed=True) for r in requests]


WRITERS = ("template", "local", "endpoint")


def make_writer(kind: str, **options: Any):
    """The writer named `kind` with its options (validated by the writer's own constructor)."""
    if kind == "template":
        if options:
            raise ValueError(f"the template writer takes no options, got {sorted(options)}")
        return TemplateWriter()
    if kind == "local":
        from components.userqa.llm_writer import LocalLLMWriter

        return LocalLLMWriter(**options)
    if kind == "endpoint":
        from components.userqa.endpoint_writer import EndpointWriter

        return EndpointWriter(**options)
    raise ValueError(f"unknown answer writer {kind!r}; choose one of {list(WRITERS)}")
