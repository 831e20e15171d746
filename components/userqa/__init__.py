"""UserQA synthesis (InstructUE 3.2): grounded facts, instruction families, answer writers, verification."""

from components.userqa.llm_writer import LocalLLMWriter
from components.userqa.records import Answer, AnswerRequest, Facts, Window
from components.userqa.synthesize import SynthesisConfig, SynthesisSummary, build_requests, synthesize
from components.userqa.view import train_view
from components.userqa.writers import TemplateWriter, make_writer

__all__ = [
    "Answer",
    "AnswerRequest",
    "Facts",
    "LocalLLMWriter",
    "SynthesisConfig",
    "SynthesisSummary",
    "TemplateWriter",
    "Window",
    "build_requests",
    "make_writer",
    "synthesize",
    "train_view",
]
