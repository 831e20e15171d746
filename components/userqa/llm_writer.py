"""An answer writer that runs a local causal LM (default: the embedded SmolLM2-135M-Instruct).

    from components.userqa.llm_writer import LocalLLMWriter
    writer = LocalLLMWriter()  # resolves and loads the backbone offline
    answers = writer.write(requests, vocabulary)  # same order as requests
    writer.generated_tokens, writer.seconds

Each request's facts become a prompt (`prompts.py`), generated in left-padded batches (greedy unless
`temperature` > 0), normalised and verified (`verify.py`). An answer that fails verification is
generated again by sampling with another seed, up to `max_attempts` generations in all; one that
still fails comes back with passed=False, its reason and the last text, and the synthesis stage
decides whether to use the request's reference instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from components.userqa.prompts import build_messages, render_plain
from components.userqa.records import Answer, AnswerRequest
from components.userqa.verify import normalise_answer, verify

log = logging.getLogger(__name__)

# A failed greedy answer would come out the same again; retries sample at this temperature instead.
RETRY_TEMPERATURE = 0.7
TOP_P = 0.95  # sampling keeps the nucleus: a 135M model's long tail is mostly broken words


class LocalLLMWriter:
    """Writes answers with a local causal LM; implements `AnswerWriter`.

    Args:
        model: a backbone spec for `resolve_backbone`: the default alias, a local folder or a hub id
            already in the local HF cache.
        cache_dir: where converted backbones live (`default_cache_dir()` when None).
        batch_size: prompts per `generate` call.
        max_new_tokens: the longest answer, in tokens.
        temperature: 0 for greedy first attempts; above 0 samples every attempt.
        max_attempts: generations per request, the first included (2: one regeneration on failure).
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1"...
        seed: seeds every sampled batch, so a run is reproducible for a given batch size.

    Raises:
        ValueError: a bad option (named in the message).
        AssetError: the model cannot be resolved offline.
    """

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        cache_dir: Path | None = None,
        batch_size: int = 16,
        max_new_tokens: int = 80,
        temperature: float = 0.0,
        max_attempts: int = 2,
        device: str = "auto",
        seed: int = 0,
    ):
        from components.modeling import load_backbone, pick_device, resolve_backbone

        _check_options(batch_size, max_new_tokens, temperature, max_attempts)
        lm, tokenizer = load_backbone(resolve_backbone(model, cache_dir))
        dev = pick_device(device)
        options = (batch_size, max_new_tokens, temperature, max_attempts, seed)
        self._setup(lm.to(dev), tokenizer, f"local:{model}", dev, *options)

    @classmethod
    def from_loaded(
        cls,
        model,
        tokenizer,
        name: str,
        batch_size: int = 16,
        max_new_tokens: int = 80,
        temperature: float = 0.0,
        max_attempts: int = 2,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> LocalLLMWriter:
        """A writer around a model already loaded (anything with HF's `generate`): tests, notebooks."""
        _check_options(batch_size, max_new_tokens, temperature, max_attempts)
        writer = cls.__new__(cls)
        options = (batch_size, max_new_tokens, temperature, max_attempts, seed)
        writer._setup(model, tokenizer, name, torch.device(device), *options)
        return writer

    def _setup(
        self, model, tokenizer, name, device, batch_size, max_new_tokens, temperature, max_attempts, seed
    ):
        self.model, self.tokenizer, self.name, self.device = model, tokenizer, name, device
        self.batch_size, self.max_new_tokens, self.temperature = batch_size, max_new_tokens, temperature
        self.max_attempts, self.seed = max_attempts, seed
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(
                    f"{name}: the tokenizer has neither a pad nor an eos token; set one of them."
                )
            tokenizer.pad_token = tokenizer.eos_token  # padded positions are masked out anyway
        eos = tokenizer.eos_token_id
        if eos is None:
            eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self._eos = {eos} if isinstance(eos, int) else set(eos or ())
        self.generated_tokens = 0  # counted up to and including each answer's end-of-sequence token
        self.seconds = 0.0  # wall time spent in `write`

    def __repr__(self) -> str:
        return (
            f"LocalLLMWriter(name={self.name!r}, device={str(self.device)!r}, batch_size={self.batch_size})"
        )

    def write(self, requests: Sequence[AnswerRequest], vocabulary: frozenset[str]) -> list[Answer]:
        """One answer per request, in order; see the module docstring for attempts and verification."""
        start = time.perf_counter()
        prompts = [self.prompt(r) for r in requests]
        answers: list[Answer | None] = [None] * len(requests)
        first_reasons: dict[int, str] = {}
        tokens = [0] * len(requests)
        pending = list(range(len(requests)))
        for attempt in range(1, self.max_attempts + 1):
            if not pending:
                break
            outputs = self._generate([prompts[i] for i in pending], attempt)
            failed = []
            for i, (raw, n_tokens) in zip(pending, outputs, strict=True):
                text = normalise_answer(raw)
                ok, reason = verify(text, requests[i].facts, vocabulary)
                tokens[i] += n_tokens
                if not ok:
                    failed.append(i)
                    first_reasons.setdefault(i, reason)
                extra = {"tokens": tokens[i]}
                if i in first_reasons:
                    extra["first_reason"] = first_reasons[i]
                answers[i] = Answer(text, self.name, ok, reason, attempts=attempt, extra=extra)
            pending = failed
        elapsed = time.perf_counter() - start
        self.seconds += elapsed
        n_passed = sum(a.passed for a in answers)
        retried = sum(a.passed and a.attempts > 1 for a in answers)
        log.info(
            "%s wrote %d answers in %.1f s: %d passed (%d after a retry), %d failed",
            *(self.name, len(requests), elapsed, n_passed, retried, len(requests) - n_passed),
        )
        return answers

    def prompt(self, request: AnswerRequest) -> str:
        """The text fed to the model: the chat template's rendering when the tokenizer has one."""
        messages = build_messages(request)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return render_plain(messages)

    def _generate(self, prompts: list[str], attempt: int) -> list[tuple[str, int]]:
        """(decoded new text, tokens generated) per prompt, in the prompts' order."""
        sample = self.temperature > 0 or attempt > 1
        temperature = self.temperature if self.temperature > 0 else RETRY_TEMPERATURE
        # Similar lengths share a batch, so little of each batch is padding.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[tuple[str, int] | None] = [None] * len(prompts)
        for b, first in enumerate(range(0, len(order), self.batch_size)):
            batch = order[first : first + self.batch_size]
            texts = [prompts[i] for i in batch]
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(self.seed + 7919 * attempt + b)  # another seed per attempt and batch
                for i, result in zip(batch, self._generate_batch(texts, sample, temperature), strict=True):
                    results[i] = result
        return results

    @torch.inference_mode()
    def _generate_batch(self, texts: list[str], sample: bool, temperature: float) -> list[tuple[str, int]]:
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        enc = self.tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            padding_side="left",  # generation continues every row from its last real token
            add_special_tokens=not templated,  # a chat template writes its own special tokens
        ).to(self.device)
        kwargs = (
            {"do_sample": True, "temperature": temperature, "top_p": TOP_P}
            if sample
            else {"do_sample": False}
        )
        out = self.model.generate(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            max_new_tokens=self.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self._eos) or None,
            **kwargs,
        )
        new = out[:, enc["input_ids"].shape[1] :].cpu()
        results = []
        for row in new.tolist():
            ends = [j for j, t in enumerate(row) if t in self._eos]
            n_tokens = ends[0] + 1 if ends else len(row)
            results.append((self.tokenizer.decode(row[:n_tokens], skip_special_tokens=True), n_tokens))
            self.generated_tokens += n_tokens
        return results


def _check_options(batch_size: int, max_new_tokens: int, temperature: float, max_attempts: int) -> None:
    problems = []
    if batch_size < 1:
        problems.append(f"batch_size={batch_size} (use 1 or more)")
    if max_new_tokens < 1:
        problems.append(f"max_new_tokens={max_new_tokens} (use 1 or more)")
    if temperature < 0:
        problems.append(f"temperature={temperature} (use 0 for greedy, or more)")
    if max_attempts < 1:
        problems.append(f"max_attempts={max_attempts} (use 1 or more; 2 regenerates once)")
    if problems:
        raise ValueError("LocalLLMWriter: bad options: " + "; ".join(problems))
