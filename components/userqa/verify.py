"""Check an LLM-written answer against the facts it was asked to rewrite (UserQA synthesis, InstructUE 3.2).

    from components.userqa.verify import normalise_answer, verify
    ok, reason = verify(normalise_answer(raw), request.facts, vocabulary)

An answer passes when everything it claims is among its facts:
  (a) every vocabulary term it names (genres, categories; case-insensitive, whole words, simple plurals
      such as "comedies") is one of the facts' terms;
  (b) every number it states (integers, decimals, percentages) is close to one of the facts' numbers
      (5% relative, or 0.06 absolute below 1); "42%" matches 0.42 or 42; a year-like token (1800-2100)
      must match exactly; signs are ignored (a fall of 0.3 is written "dropped by 0.3"; (c) checks the
      direction);
  (c) it states no direction opposite to the facts' direction (only when `facts.direction` is set);
  (d) it is an answer at all: not empty, at least three words, not a refusal, not an echo of the prompt,
      not a question, not looping (six words said twice);
  (e) it is grounded: it names one of the facts' terms or numbers, or, for facts with neither, shares
      at least two content words with the statements. Checks (a)-(c) only reject false claims, so
      without (e) vague text, an echo of the question, or a random model's word salad would pass.
      Shared words alone are not enough when there are terms or numbers to name: a question's own
      words ("recent", "earlier", "ratings") recur in its statements, so echoing it would pass.
Terms and numbers that the fact statements themselves contain are allowed too: the statements are true
by construction, so `Facts.terms` and `Facts.numbers` missing one of theirs must not reject an answer.

Numbers written as words ("three") and negated trends ("did not increase") are not checked: the first
are rare in LLM rewrites of digit facts, the second are skipped rather than misread.
"""

from __future__ import annotations

import re
from functools import lru_cache

from components.userqa.records import Facts

MIN_WORDS = 3
REPEAT_NGRAM = 6  # a run of this many words said twice: a small model looping, not an answer
REL_TOL, ABS_TOL = 0.05, 0.06  # ABS_TOL applies to numbers below 1 (shares, rates)
YEAR_RANGE = (1800, 2100)

_REFUSALS = re.compile(
    r"\b(as an ai|an ai (language )?model|language model|i'?m sorry|i am sorry|i apologi[sz]e|i cannot|"
    r"i can'?t|i am unable|i'?m unable|i do not have access|i don'?t have access|i'?m not able)\b",
    re.IGNORECASE,
)
# Labels and phrases of the prompt itself (prompts.py): an answer holding them repeats the prompt.
_ECHOES = re.compile(
    r"(\bquestion:|\bfacts:|\brewrite (the )?facts\b|\buse only the facts\b|<\|im_(start|end)\|>)",
    re.IGNORECASE,
)

_NUMBER = re.compile(
    r"(?<![\w.,])"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?P<suffix>\s?%|\s?per\s?cent\b|s\b|st\b|nd\b|rd\b|th\b)?"
    r"(?!\w)",
    re.IGNORECASE,
)

_UP = (
    "more", "increase", "increases", "increased", "increasing", "rise", "rises", "rising", "rose",
    "up", "upward", "upwards", "higher", "grow", "grows", "growing", "grew", "growth", "climb",
    "climbs", "climbing", "climbed", "gain", "gains", "gaining", "gained",
)  # fmt: skip
_DOWN = (
    "less", "fewer", "decrease", "decreases", "decreased", "decreasing", "fall", "falls", "falling",
    "fell", "down", "downward", "downwards", "lower", "decline", "declines", "declining", "declined",
    "drop", "drops", "dropping", "dropped", "shrink", "shrinks", "shrinking", "shrank", "reduce",
    "reduces", "reducing", "reduced",
)  # fmt: skip
# For a "same" trend only verbs of change are contradictions; "more" and "less" also compare genres.
_COMPARATIVES = {"more", "less", "fewer", "higher", "lower", "up", "down", "upward", "upwards", "downward"}
_NEGATORS = {"not", "no", "never", "neither", "nor", "without", "hardly"}
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
MIN_SHARED_WORDS = 2
_STOPWORDS = frozenset({
    "user", "users", "this", "that", "these", "those", "they", "them", "their", "there", "then",
    "than", "what", "which", "with", "from", "have", "been", "were", "will", "would", "could",
    "should", "about", "into", "over", "also", "very", "much", "more", "most", "some", "such",
    "only", "each", "other", "while", "when", "where", "your", "yours",
})  # fmt: skip


def verify(text: str, facts: Facts, vocabulary: frozenset[str]) -> tuple[bool, str]:
    """Whether `text` claims only what `facts` hold; the reason names the first offending claim.

    Args:
        text: the answer, ideally after `normalise_answer`.
        facts: what the answer may claim about the user.
        vocabulary: every term of the dataset (all genres or categories), in any case.

    Returns:
        (True, "") when the answer passes, else (False, reason).
    """
    for check in (_check_form, _check_terms, _check_numbers, _check_direction, _check_grounded):
        reason = check(text, facts, vocabulary)
        if reason:
            return False, reason
    return True, ""


def normalise_answer(text: str) -> str:
    """Strip chat artefacts from a generated answer.

    Removes special tokens, a leading role or answer label ("assistant:", "Answer:"), a following turn
    the model went on to write ("User: ..."), surrounding quotes and markdown emphasis, runs of
    whitespace, and a trailing incomplete sentence when at least one full sentence comes before it.
    """
    text = re.sub(r"<\|[^|>]*\|>|</?s>|\[(?:CLS|SEP|PAD)\]", " ", text)
    text = re.sub(r"\*\*|__", "", text)
    prefix = re.compile(r"^\s*(?:assistant|answer|a|response|smollm)\s*[:\n]\s*", re.IGNORECASE)
    while (stripped := prefix.sub("", text, count=1)) != text:
        text = stripped
    turn = re.search(r"(?:^|\n)\s*(?:user|human|system|question|assistant)\s*:", text, re.IGNORECASE)
    if turn and turn.start() > 0:
        text = text[: turn.start()]
    text = " ".join(text.split())
    text = _unquote(text)
    ends = list(re.finditer(r"[.!?][\"'”’)]*(?=\s|$)", text))
    if ends and ends[-1].end() < len(text):
        text = text[: ends[-1].end()]
    return text.strip()


# -- the four checks: each returns "" when the text passes it, else the reason -------------------------


def _check_form(text: str, facts: Facts, vocabulary: frozenset[str]) -> str:
    if not text.strip():
        return "empty answer"
    if m := _REFUSALS.search(text):
        return f"refusal ({m.group(0)!r})"
    if m := _ECHOES.search(text):
        return f"echoes the prompt ({m.group(0)!r})"
    n_words = len(re.findall(r"\w+", text))
    if n_words < MIN_WORDS:
        return f"too short ({n_words} word{'s' if n_words != 1 else ''}; at least {MIN_WORDS})"
    if text.rstrip().endswith("?"):
        return "a question, not an answer"
    words = re.findall(r"\w+", text.casefold())
    seen = set()
    for i in range(len(words) - REPEAT_NGRAM + 1):
        gram = tuple(words[i : i + REPEAT_NGRAM])
        if gram in seen:
            return f"repeats itself ({' '.join(gram)!r} twice)"
        seen.add(gram)
    return ""


def _check_terms(text: str, facts: Facts, vocabulary: frozenset[str]) -> str:
    allowed = {t.casefold() for t in facts.terms}
    for statement in facts.statements:
        allowed.update(term.casefold() for term, _ in _find_terms(statement, vocabulary))
    for term, span in _find_terms(text, vocabulary):
        if term.casefold() not in allowed:
            shown = ", ".join(sorted(facts.terms)) or "none"
            return (
                f"names {text[span[0] : span[1]]!r} ({term}), which is not among the facts' terms ({shown})"
            )
    return ""


def _check_numbers(text: str, facts: Facts, vocabulary: frozenset[str]) -> str:
    facts_numbers = [abs(float(n)) for n in facts.numbers]
    for statement in facts.statements:
        facts_numbers.extend(value for value, _, _ in _numbers(_mask_terms(statement, vocabulary)))
    for value, token, is_percent in _numbers(_mask_terms(text, vocabulary)):
        candidates = (value, value / 100) if is_percent else (value,)
        if _is_year(value, token):
            ok = value in facts_numbers or any(_close(value, n) for n in facts_numbers if not _is_year(n))
        else:
            ok = any(_close(c, n) for c in candidates for n in facts_numbers)
        if not ok:
            shown = ", ".join(f"{n:g}" for n in facts.numbers) or "none"
            return f"states {token!r}, which matches none of the facts' numbers ({shown})"
    return ""


def _check_direction(text: str, facts: Facts, vocabulary: frozenset[str]) -> str:
    if facts.direction is None:
        return ""
    direction = facts.direction.casefold()
    if direction == "up":
        opposite = set(_DOWN)
    elif direction == "down":
        opposite = set(_UP)
    elif direction == "same":
        opposite = (set(_UP) | set(_DOWN)) - _COMPARATIVES
    else:
        raise ValueError(
            f"Facts.direction is {facts.direction!r} for user {facts.user_id}; use up, down or same"
        )
    words = _WORD.findall(_mask_terms(text, vocabulary).casefold().replace("’", "'"))
    for i, word in enumerate(words):
        if (
            word in opposite
            and not _NEGATORS.intersection(words[max(0, i - 3) : i])
            and not any(w.endswith("n't") for w in words[max(0, i - 3) : i])
        ):
            return f"says {word!r}, opposite to the facts' direction ({facts.direction})"
    return ""


def _check_grounded(text: str, facts: Facts, vocabulary: frozenset[str]) -> str:
    if not facts.statements:
        return ""
    allowed = {t.casefold() for t in facts.terms}
    if any(term.casefold() in allowed for term, _ in _find_terms(text, vocabulary)):
        return ""
    if facts.numbers and _numbers(_mask_terms(text, vocabulary)):
        return ""  # (b) has already checked that every stated number is among the facts
    if facts.terms or facts.numbers:
        return "ungrounded: names none of the facts' terms or numbers"
    shared = _content_words(text) & _content_words(" ".join(facts.statements))
    if len(shared) >= MIN_SHARED_WORDS:
        return ""
    return (
        f"ungrounded: shares {len(shared)} content word(s) with the facts (at least {MIN_SHARED_WORDS}, "
        "as the facts have no terms or numbers to name)"
    )


# -- helpers ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _term_patterns(vocabulary: frozenset[str]) -> tuple[tuple[str, re.Pattern], ...]:
    """One pattern per term, longest first, so "Film-Noir" is found before a shorter "Noir"."""
    patterns = []
    for term in sorted(vocabulary, key=lambda t: (-len(t), t)):
        if not term.strip():
            continue
        body = re.escape(term.strip())
        body = body.replace(r"\-", r"[-\s]?").replace(r"\ ", r"\s+")  # "sci fi", "film  noir"
        body = body.replace("'", "['’]?")  # "childrens", "children’s"
        plural = r"(?:s|es)?"
        if term[-1:].lower() == "y" and term[-2:-1].isalpha() and term[-2:-1].lower() not in "aeiou":
            body = f"(?:{body}|{body[:-1]}ies)"  # comedy -> comedies
        patterns.append((term, re.compile(rf"(?<![\w-]){body}{plural}(?![\w-])", re.IGNORECASE)))
    return tuple(patterns)


def _find_terms(text: str, vocabulary: frozenset[str]) -> list[tuple[str, tuple[int, int]]]:
    """(term, span) for each vocabulary term named in `text`, a longer term hiding those inside it."""
    taken = [False] * len(text)
    found = []
    for term, pattern in _term_patterns(vocabulary):
        for m in pattern.finditer(text):
            if not any(taken[m.start() : m.end()]):
                taken[m.start() : m.end()] = [True] * (m.end() - m.start())
                found.append((term, m.span()))
    return sorted(found, key=lambda f: f[1])


def _mask_terms(text: str, vocabulary: frozenset[str]) -> str:
    """`text` with every vocabulary term blanked out (a term's digits or words are not claims)."""
    for _, (start, end) in _find_terms(text, vocabulary):
        text = text[:start] + " " * (end - start) + text[end:]
    return text


def _numbers(text: str) -> list[tuple[float, str, bool]]:
    """(value, token, is_percent) for every number written in digits."""
    out = []
    for m in _NUMBER.finditer(text):
        suffix = (m.group("suffix") or "").strip().casefold()
        out.append(
            (float(m.group("num").replace(",", "")), m.group(0).strip(), suffix.startswith(("%", "per")))
        )
    return out


def _unquote(text: str) -> str:
    """Drop quotes around the whole answer, or an opening quote whose closing one was cut off."""
    pairs = {'"': '"', "“": "”", "'": "'", "‘": "’", "`": "`"}
    while text[:1] in pairs:
        close, inner = pairs[text[0]], text[1:]
        # apostrophes inside words ("user's") are not quotes; a quote is at a word's edge
        edges = re.findall(rf"(?:^|\s){re.escape(close)}|{re.escape(close)}(?=\s|$|[.,;:!?])", inner)
        if inner.endswith(close) and len(edges) == 1:
            text = inner[:-1].strip()
        elif not edges:
            text = inner.strip()
        else:
            break
    return text


def _content_words(text: str) -> set[str]:
    """Words of four letters or more, minus function words and "user", crudely singular."""
    words = set()
    for w in re.findall(r"[a-z]{4,}", text.casefold()):
        if w not in _STOPWORDS:
            words.add(w[:-1] if w.endswith("s") and not w.endswith("ss") else w)
    return words


def _is_year(value: float, token: str = "") -> bool:
    return (
        value.is_integer()
        and YEAR_RANGE[0] <= value <= YEAR_RANGE[1]
        and "," not in token
        and "." not in token
        and "%" not in token
    )


def _close(stated: float, fact: float) -> bool:
    tolerance = max(REL_TOL * fact, ABS_TOL if fact < 1 else 0.0)
    return abs(stated - fact) <= tolerance + 1e-9
