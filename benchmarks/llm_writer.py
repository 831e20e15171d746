"""The local LLM answer writer (default: embedded SmolLM2-135M-Instruct) on UserQA requests:
time per record, tokens per second, how often verification rejects an answer (first attempt, and
after the sampled retry) and why, and a few example answers next to their template references.

Requests come from `components.userqa.synthesize.build_requests` on an ingested dataset; without
one (`--data` missing) from hand-written MovieLens-like facts for synthetic users.

    python benchmarks/llm_writer.py                      # 200 requests from data/movielens-100k
    python benchmarks/llm_writer.py --n 50 --batch-size 8
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from common import PeakRss, machine, write_result

from components.userqa import Answer, AnswerRequest, Facts, LocalLLMWriter, Window

GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def dataset_requests(folder: Path, n: int, seed: int) -> tuple[list[AnswerRequest], frozenset[str], str]:
    from components.ingestion import read_tables
    from components.userqa import build_requests, train_view

    card, tables = read_tables(folder)
    vocabulary = train_view(tables, card.sequence_sources).vocabulary
    return build_requests(folder, n, seed), vocabulary, f"build_requests({folder}, n={n}, seed={seed})"


def synthetic_requests(n: int, seed: int) -> tuple[list[AnswerRequest], frozenset[str], str]:
    """MovieLens-like facts for synthetic users, one family per request, cycling through four."""
    rng = np.random.default_rng(seed)
    out = []
    for user in range(1, n + 1):
        g = [str(x) for x in rng.choice(GENRES, size=3, replace=False)]
        share, mean, count = (
            int(rng.integers(20, 60)),
            round(float(rng.uniform(2.5, 4.6)), 1),
            int(rng.integers(20, 400)),
        )
        kind = user % 4
        if kind == 0:
            family, instruction = "favourite_terms", "Which genres does this user like most?"
            statements = [
                f"The genres that appear most in this user's ratings are {g[0]} ({share}%) and {g[1]}."
            ]
            terms, numbers, direction = {g[0], g[1]}, (share,), None
        elif kind == 1:
            family, instruction = "value_habits", "How generous is this user with ratings?"
            statements = [f"This user gives {mean} stars on average over {count} ratings."]
            terms, numbers, direction = set(), (mean, count), None
        elif kind == 2:
            family, instruction = "recent_shift", "Has this user's taste changed recently?"
            later = round(mean - 0.5, 1)
            statements = [
                f"Earlier this user's ratings were mostly about {g[0]}; recently mostly about {g[2]}.",
                f"Their recent ratings are lower than before: {later} versus {mean} stars.",
            ]
            terms, numbers, direction = {g[0], g[2]}, (later, mean), "down"
        else:
            family, instruction = "general", None
            statements = [
                f"The genres that appear most in this user's ratings are {g[0]} ({share}%) and {g[1]}.",
                f"This user gives {mean} stars on average over {count} ratings.",
            ]
            terms, numbers, direction = {g[0], g[1]}, (share, mean, count), None
        facts = Facts(user, family, Window.PROFILE, tuple(statements), frozenset(terms),
                      tuple(float(x) for x in numbers), direction)  # fmt: skip
        out.append(AnswerRequest(user, family, instruction, facts, reference=" ".join(statements)))
    return out, frozenset(GENRES), f"synthetic MovieLens-like facts, n={n}, seed={seed}"


# how each verification reason starts -> a short name for counting
REASON_KINDS = {
    "names": "unlisted term",
    "states": "unlisted number",
    "says": "opposite direction",
    "ungrounded": "ungrounded",
    "repeats": "repetition",
    "too short": "too short",
    "echoes": "prompt echo",
    "refusal": "refusal",
    "a question": "question",
    "empty": "empty",
}


def reason_kind(reason: str) -> str:
    return next(
        (kind for prefix, kind in REASON_KINDS.items() if reason.startswith(prefix)), reason.split(":")[0]
    )


def example(request: AnswerRequest, answer: Answer) -> dict:
    return {
        "family": request.family,
        "instruction": request.instruction,
        "reference": request.reference,
        "answer": answer.text,
        "passed": answer.passed,
        "attempts": answer.attempts,
        "reason": answer.reason,
    }


def summarise(requests: list[AnswerRequest], answers: list[Answer]) -> dict:
    n = len(answers)
    first_failed = [a for a in answers if a.attempts > 1 or not a.passed]
    final_failed = [a for a in answers if not a.passed]
    per_family: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r, a in zip(requests, answers, strict=True):
        per_family[r.family][0] += a.passed
        per_family[r.family][1] += 1
    first_reasons = [a.extra.get("first_reason") or a.reason for a in first_failed]
    return {
        "rejected_first_attempt": round(len(first_failed) / n, 4),
        "rejected_after_retry": round(len(final_failed) / n, 4),
        "first_attempt_reasons": dict(Counter(map(reason_kind, first_reasons)).most_common()),
        "final_reasons": dict(Counter(reason_kind(a.reason) for a in final_failed).most_common()),
        "pass_rate_per_family": {f: f"{p}/{t}" for f, (p, t) in sorted(per_family.items())},
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("data/movielens-100k"))
    p.add_argument("--n", type=int, default=200, help="requests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=80)
    p.add_argument("--device", default="auto")
    p.add_argument("--examples", type=int, default=6)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/llm_writer.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if (args.data / "events.parquet").exists():
        requests, vocabulary, source = dataset_requests(args.data, args.n, args.seed)
    else:
        requests, vocabulary, source = synthetic_requests(args.n, args.seed)
    with PeakRss() as mem:
        start = time.perf_counter()
        writer = LocalLLMWriter(args.model, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                device=args.device, seed=args.seed)  # fmt: skip
        load_s = time.perf_counter() - start
        answers = writer.write(requests, vocabulary)
    n = len(requests)
    rng = np.random.default_rng(args.seed)
    picks = sorted(rng.choice(n, size=min(args.examples, n), replace=False).tolist())
    rejected = [i for i, a in enumerate(answers) if not a.passed][:2]
    examples = [example(requests[i], answers[i]) for i in dict.fromkeys(picks + rejected)]
    report = {
        "benchmark": "llm_writer",
        "machine": machine(),
        "writer": writer.name,
        "device": str(writer.device),
        "requests": source,
        "n": n,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "load_seconds": round(load_s, 2),
        "write_seconds": round(writer.seconds, 2),
        "seconds_per_record": round(writer.seconds / n, 4),
        "generated_tokens": writer.generated_tokens,
        "tokens_per_second": round(writer.generated_tokens / writer.seconds, 1),
        "generations": sum(a.attempts for a in answers),
        "peak_rss_gb": round(mem.peak / 2**30, 2),
        **summarise(requests, answers),
        "examples": examples,
    }
    print(
        f"{writer.name} on {writer.device}: {n} records in {writer.seconds:.1f} s "
        f"({report['seconds_per_record']:.3f} s per record, {report['tokens_per_second']:.0f} tokens/s; "
        f"model load {load_s:.1f} s)\n"
        f"rejected: {report['rejected_first_attempt']:.1%} at the first attempt, "
        f"{report['rejected_after_retry']:.1%} after the retry\n"
        f"first-attempt reasons: {report['first_attempt_reasons']}\n"
        f"pass rate per family: {report['pass_rate_per_family']}"
    )
    for e in examples:
        mark = "ok" if e["passed"] else f"REJECTED: {e['reason']}"
        print(f"\n[{e['family']}] {e['instruction']}\n  reference: {e['reference']}")
        print(f"  answer:    {e['answer']}  ({mark})")
    write_result(args.out, report)
    return report


if __name__ == "__main__":
    main()
