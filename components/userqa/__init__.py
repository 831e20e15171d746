"""UserQA synthesis (InstructUE 3.2): grounded facts, instruction families, answer writers, verification."""

from components.userqa import recorded
from components.userqa.llm_writer import LocalLLMWriter
from components.userqa.records import Answer, AnswerRequest, Facts, Window
from components.userqa.synthesize import (
    SynthesisConfig,
    SynthesisPlan,
    SynthesisSummary,
    build_requests,
    finish_synthesis,
    plan_synthesis,
    synthesize,
    synthesize_shard,
)
from components.userqa.view import train_view
from components.userqa.writers import TemplateWriter, make_writer

__all__ = [
    "Answer",
    "AnswerRequest",
    "Facts",
    "LocalLLMWriter",
    "SynthesisConfig",
    "SynthesisPlan",
    "SynthesisSummary",
    "TemplateWriter",
    "Window",
    "build_requests",
    "finish_synthesis",
    "make_writer",
    "recorded",
    "plan_synthesis",
    "synthesize",
    "synthesize_shard",
    "train_view",
]
