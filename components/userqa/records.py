"""The types that flow through UserQA synthesis.

    facts (grounded, per user and family) -> AnswerRequest (+ instruction) -> AnswerWriter -> Answer

A `Facts` holds everything an answer may claim about one user for one task family: plain sentences,
each true of the user's data, and the terms, numbers and direction they contain. Verification
(`verify.py`) rejects an LLM-written answer that claims a term of the dataset's vocabulary, a number
or a direction that is not among its facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class Window(StrEnum):
    PROFILE = "profile"  # descriptive and diagnostic families: the profile window only
    FUTURE = "future"  # forward-looking families: the future window only
    NONE = "none"  # the general family's holistic summary is built from the profile


@dataclass(frozen=True)
class Facts:
    user_id: int
    family: str
    window: Window
    statements: tuple[str, ...]  # each a sentence true of the user's data in `window`
    terms: frozenset[str] = frozenset()  # vocabulary terms (genres, categories) the statements name
    numbers: tuple[float, ...] = ()  # numbers the statements state
    direction: str | None = None  # "up", "down" or "same" when the family is about a trend


@dataclass(frozen=True)
class AnswerRequest:
    user_id: int
    family: str
    instruction: str | None  # None: the general family (no instruction)
    facts: Facts
    reference: str  # the template writer's answer: always correct, used as a fallback and a hint


@dataclass
class Answer:
    text: str
    writer: str  # "template", "local:<model>", "endpoint:<model>"
    passed: bool  # verification against the facts
    reason: str = ""  # why verification failed (empty when passed)
    attempts: int = 1
    extra: dict = field(default_factory=dict)


class AnswerWriter(Protocol):
    """Turns requests into answers, in order. Writers batch and parallelise as they see fit."""

    name: str

    def write(self, requests: Sequence[AnswerRequest], vocabulary: frozenset[str]) -> list[Answer]: ...
