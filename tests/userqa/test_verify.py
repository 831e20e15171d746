"""verify() and normalise_answer() on hand-written answers: one table of cases per check."""

from __future__ import annotations

import pytest

from components.userqa.records import Facts, Window
from components.userqa.verify import normalise_answer, verify

pytestmark = pytest.mark.unit

GENRES = frozenset(
    {
        "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
        "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
        "Western", "IMAX", "(no genres listed)",
    }
)  # fmt: skip


def facts(terms=(), numbers=(), direction=None, statements=()) -> Facts:
    return Facts(
        user_id=7,
        family="preferences",
        window=Window.PROFILE,
        statements=tuple(statements),
        terms=frozenset(terms),
        numbers=tuple(numbers),
        direction=direction,
    )


def check(text, f, vocabulary=GENRES):
    return verify(text, f, vocabulary)


# -- (a) vocabulary terms ------------------------------------------------------------------------------
TERM_CASES = [
    # text, facts' terms, passes, word the reason must name
    ("The user mostly watches Comedy and Drama.", {"Comedy", "Drama"}, True, ""),
    ("The user mostly watches comedy and drama.", {"Comedy", "Drama"}, True, ""),
    ("The user loves comedies and dramas.", {"Comedy", "Drama"}, True, ""),
    ("The user loves comedies and thrillers.", {"Comedy", "Drama"}, False, "Thriller"),
    ("The user enjoys Horror films above all.", {"Comedy"}, False, "Horror"),
    ("The user enjoys HORROR films above all.", {"Comedy"}, False, "Horror"),
    ("The user is into sci-fi and action.", {"Sci-Fi", "Action"}, True, ""),
    ("The user is into sci fi and action.", {"Sci-Fi", "Action"}, True, ""),
    ("The user is into Sci-Fi and westerns.", {"Sci-Fi", "Action"}, False, "Western"),
    ("The user watches Children's movies with the family.", {"Children's"}, True, ""),
    ("The user watches children’s movies with the family.", {"Children's"}, True, ""),
    ("The user watches Children's movies with the family.", {"Comedy"}, False, "Children's"),
    ("The user has a soft spot for film-noir classics.", {"Film-Noir"}, True, ""),
    ("The user has a soft spot for film noir classics.", {"Crime"}, False, "Film-Noir"),
    ("The user likes Mystery and IMAX screenings.", {"Mystery", "IMAX"}, True, ""),
    # whole words only: "dramatic", "warm", "awarded", "actionable" name no genre
    ("The user prefers dramatic, warm and awarded stories.", {"Comedy"}, True, ""),
    ("The user is a keen war film fan.", {"Comedy"}, False, "War"),
    ("The user's ratings list (no genres listed) items too.", {"Comedy"}, False, "(no genres listed)"),
]


@pytest.mark.parametrize(("text", "terms", "passes", "named"), TERM_CASES)
def test_terms(text, terms, passes, named):
    ok, reason = check(text, facts(terms=terms))
    assert ok is passes, reason
    if not passes:
        assert named in reason and "term" in reason


def test_a_longer_term_hides_a_shorter_one_inside_it():
    vocabulary = frozenset({"Film-Noir", "Noir", "Film"})
    assert check("The user likes film-noir a lot.", facts(terms={"Film-Noir"}), vocabulary)[0]
    assert check("The user likes film noir a lot.", facts(terms={"Film-Noir"}), vocabulary)[0]
    ok, reason = check("The user likes noir a lot.", facts(terms={"Film-Noir"}), vocabulary)
    assert not ok
    assert "(Noir)" in reason


def test_terms_named_by_the_statements_are_allowed_even_if_missing_from_terms():
    f = facts(terms={"Comedy"}, statements=["The user never rates Horror movies."])
    assert check("The user likes Comedy and avoids Horror.", f)[0]


def test_terms_outside_the_vocabulary_are_not_checked():
    assert check("The user likes cooking shows and Comedy.", facts(terms={"Comedy"}))[0]


# -- (b) numbers -----------------------------------------------------------------------------------------
NUMBER_CASES = [
    # text, facts' numbers, passes
    ("The user has a mean rating of 3.6 stars.", (3.6,), True),
    ("The user has a mean rating of 3.62 stars.", (3.6,), True),
    ("The user has a mean rating of 3.75 stars.", (3.6,), True),  # 5% of 3.6 is 0.18
    ("The user has a mean rating of 3.9 stars.", (3.6,), False),
    ("The user has a mean rating of 4.", (3.6,), False),
    ("The user rated 87 movies.", (87,), True),
    ("The user rated about 90 movies.", (87,), True),
    ("The user rated about 100 movies.", (87,), False),
    ("The user rated 1,250 movies so far.", (1250,), True),
    ("The user rated 1,250 movies so far.", (1300,), True),
    ("The user rated 1,250 movies so far.", (1400,), False),
    # shares: 0.06 absolute below 1, and a percentage matches the share or the same number
    ("The user gives 0.45 of ratings as fives.", (0.42,), True),
    ("The user gives 0.5 of ratings as fives.", (0.42,), False),
    ("42% of the user's ratings are top marks.", (0.42,), True),
    ("42% of the user's ratings are top marks.", (42,), True),
    ("42 % of the user's ratings are top marks.", (0.42,), True),
    ("42 percent of the user's ratings are top marks.", (0.42,), True),
    ("60% of the user's ratings are top marks.", (0.42,), False),
    ("A share of 42 of the user's ratings are top marks.", (0.42,), False),  # plain 42 is not 0.42
    ("The user's share of top marks is .4 overall.", (0.42,), True),
    # signs are conveyed by words; the number's size is what is checked
    ("The mean rating dropped by 0.3 this month.", (-0.3,), True),
    # years match exactly; 5% of 1995 would accept a century
    ("The user mostly watches films from 1995 and later.", (1995,), True),
    ("The user mostly watches films from 1994 and later.", (1995,), False),
    ("The user mostly watches films from the 1990s.", (1990,), True),
    ("The user mostly watches films from the 1980s.", (1990,), False),
    ("The user has rated 2000 movies in total.", (1990,), False),
    ("The user has rated 2000 movies in total.", (2010.0, 2000.5), True),
    # ordinals and numbers glued to words
    ("Comedy is the user's 2nd favourite genre.", (2,), True),
    ("Comedy is the user's 3rd favourite genre.", (2,), False),
    ("The user likes 5-star movies most.", (5,), True),
    ("The user likes 5-star movies most.", (4.4,), False),
    # no numbers at all
    ("The user likes Comedy and Drama.", (), True),
    ("The user has rated 12 movies.", (), False),
]


@pytest.mark.parametrize(("text", "numbers", "passes"), NUMBER_CASES)
def test_numbers(text, numbers, passes):
    ok, reason = check(text, facts(terms={"Comedy", "Drama"}, numbers=numbers))
    assert ok is passes, reason
    if not passes:
        assert "states" in reason and "numbers" in reason


def test_the_reason_names_the_number_and_the_facts():
    ok, reason = check("The user rated 120 movies with a mean of 3.6.", facts(numbers=(87, 3.6)))
    assert not ok
    assert "'120'" in reason and "87" in reason and "3.6" in reason


def test_numbers_inside_vocabulary_terms_are_not_claims():
    vocabulary = frozenset({"Top 250", "Comedy"})
    assert check("The user mostly rates Top 250 titles.", facts(terms={"Top 250"}), vocabulary)[0]
    assert not check("The user mostly rates 250 titles.", facts(terms={"Top 250"}), vocabulary)[0]


def test_numbers_stated_by_the_statements_are_allowed_even_if_missing_from_numbers():
    f = facts(numbers=(4.3,), statements=["The user's mean rating is 4.3 out of 5."])
    assert check("The user is generous: 4.3 out of 5 on average.", f)[0]
    assert not check("The user is generous: 4.3 out of 5 on average.", facts(numbers=(4.3,)))[0]


# -- (c) direction ---------------------------------------------------------------------------------------
DIRECTION_CASES = [
    # text, direction, passes
    ("The user will watch more movies next month.", "up", True),
    ("The user's activity is rising steadily.", "up", True),
    ("The user will watch fewer movies next month.", "up", False),
    ("The user's activity is falling.", "up", False),
    ("The user's activity went down recently.", "up", False),
    ("The user's ratings will decrease next month.", "up", False),
    ("The user will watch fewer movies next month.", "down", True),
    ("The user's activity is declining.", "down", True),
    ("The user will watch more movies next month.", "down", False),
    ("The user's activity will increase sharply.", "down", False),
    ("The user's activity went up recently.", "down", False),
    ("The user's activity will not increase next month.", "down", True),  # negated: not a claim
    ("The user's activity won't increase next month.", "down", True),
    ("The user's activity will stay the same next month.", "same", True),
    ("The user watches more Comedy than Drama, at a steady pace.", "same", True),
    ("The user's activity will increase next month.", "same", False),
    ("The user's activity is declining.", "same", False),
    # without a direction in the facts nothing is checked
    ("The user's activity will increase next month.", None, True),
    ("The user's activity is declining.", None, True),
]


@pytest.mark.parametrize(("text", "direction", "passes"), DIRECTION_CASES)
def test_direction(text, direction, passes):
    ok, reason = check(text, facts(terms={"Comedy", "Drama"}, direction=direction))
    assert ok is passes, reason
    if not passes:
        assert "opposite" in reason and direction in reason


def test_an_unknown_direction_is_a_bug_in_the_facts():
    with pytest.raises(ValueError, match="sideways"):
        check("The user will watch more movies.", facts(direction="sideways"))


# -- (d) form: empty, short, refusal, echo ---------------------------------------------------------------
FORM_CASES = [
    # text, word the reason must contain
    ("", "empty"),
    ("   \n ", "empty"),
    ("Comedy.", "too short"),
    ("The user", "too short"),
    ("As an AI, I cannot know what this user likes.", "refusal"),
    ("I'm sorry, but I don't have access to user data.", "refusal"),
    ("As a language model I do not judge users.", "refusal"),
    ("Question: What does the user like? Facts: - Comedy", "echoes the prompt"),
    ("Rewrite the facts as a fluent answer please.", "echoes the prompt"),
    ("<|im_start|>assistant The user likes Comedy.", "echoes the prompt"),
    ("What kinds of movies does this user like?", "question"),
    (
        "The user likes Comedy films, which are highly rated, but the user likes Comedy films, which are highly rated.",
        "repeats itself",
    ),
]


@pytest.mark.parametrize(("text", "why"), FORM_CASES)
def test_form(text, why):
    ok, reason = check(text, facts(terms={"Comedy"}))
    assert not ok
    assert why in reason


def test_repeating_a_short_phrase_is_not_looping():
    text = "The user rates Comedy 4.1 stars on average and Drama 3.9 stars on average."
    assert check(text, facts(terms={"Comedy", "Drama"}, numbers=(4.1, 3.9)))[0]


def test_the_first_failing_check_gives_the_reason():
    ok, reason = check("As an AI, I think the user likes Horror 5 times.", facts())
    assert not ok and "refusal" in reason


def test_a_good_answer_passes_every_check():
    f = facts(
        terms={"Comedy", "Drama"},
        numbers=(87, 3.6, 0.42),
        direction="up",
        statements=["The user rated 87 movies.", "The mean rating is 3.6.", "42% are Comedy."],
    )
    text = "The user has rated 87 movies, mostly comedies (42%) and dramas, averaging 3.6, and watches more lately."
    assert check(text, f) == (True, "")


# -- (e) grounding -----------------------------------------------------------------------------------------
GROUNDED_FACTS = facts(
    terms={"Action"},
    numbers=(15,),
    statements=["This user has broad taste: 15 different genres, the largest being Action."],
)
WORDS_ONLY_FACTS = facts(statements=["This user's recent ratings stay focused on the same genres as before."])
GROUNDING_CASES = [
    # text, facts, passes
    ("The user mostly watches Action films.", GROUNDED_FACTS, True),  # a fact term
    ("The user has rated films across 15 genres.", GROUNDED_FACTS, True),  # a fact number
    ("The user has a broad taste spanning many different genres.", GROUNDED_FACTS, False),  # vague
    ("murderous copies wander inscription clenching collaborative gaunt drop", GROUNDED_FACTS, False),
    ("The user is a person who enjoys things.", GROUNDED_FACTS, False),  # fluent, but says nothing
    # facts without terms or numbers: two shared content words are enough
    ("The user's recent ratings focus on familiar genres.", WORDS_ONLY_FACTS, True),
    ("The user's recent mood is cheerful and calm.", WORDS_ONLY_FACTS, False),  # one: "recent"
    ("murderous copies wander inscription clenching collaborative gaunt drop", WORDS_ONLY_FACTS, False),
]


@pytest.mark.parametrize(("text", "f", "passes"), GROUNDING_CASES)
def test_grounding(text, f, passes):
    ok, reason = check(text, f)
    assert ok is passes, reason
    if not passes:
        assert "ungrounded" in reason


def test_echoing_the_question_is_not_grounded():
    f = facts(
        terms={"Action", "Thriller"},
        numbers=(4.2, 3.8),
        statements=[
            "Earlier this user's ratings were mostly about Thriller; recently mostly about Action.",
            "Their recent ratings are higher than before: 4.2 versus 3.8 stars.",
        ],
    )
    ok, reason = check("The user's recent and earlier films compared to their recent and earlier ratings.", f)
    assert not ok and "ungrounded" in reason


def test_grounding_needs_statements_to_compare_with():
    assert check("The user is a person who enjoys things.", facts())[0]


# -- normalise_answer ------------------------------------------------------------------------------------
NORMALISE_CASES = [
    ("The user likes Comedy.", "The user likes Comedy."),
    ("  The user   likes\n\nComedy.  ", "The user likes Comedy."),
    ("assistant: The user likes Comedy.", "The user likes Comedy."),
    ("Assistant\nThe user likes Comedy.", "The user likes Comedy."),
    ("Answer: The user likes Comedy.", "The user likes Comedy."),
    ("**Answer:** The user likes Comedy.", "The user likes Comedy."),
    ("<|im_start|>assistant\nThe user likes Comedy.<|im_end|>", "The user likes Comedy."),
    ("The user likes Comedy.</s>", "The user likes Comedy."),
    ('"The user likes Comedy."', "The user likes Comedy."),
    ("“The user likes Comedy.”", "The user likes Comedy."),
    ("'The user's favourite is Comedy.'", "The user's favourite is Comedy."),
    ('"Comedy" and "Drama" are the user\'s genres.', '"Comedy" and "Drama" are the user\'s genres.'),
    ('"The user likes Comedy. They also watch', "The user likes Comedy."),
    # a trailing incomplete sentence goes when a full one comes before it
    ("The user likes Comedy. They also watch a lot of", "The user likes Comedy."),
    ("The user likes Comedy! They also", "The user likes Comedy!"),
    ("The mean rating is 3.6. The user also rates", "The mean rating is 3.6."),
    ("The user likes Comedy and watches a lot of", "The user likes Comedy and watches a lot of"),
    ("The mean rating is 3.6 and rising", "The mean rating is 3.6 and rising"),
    # a following turn the model went on to write
    ("The user likes Comedy.\nUser: And what about Drama?", "The user likes Comedy."),
    ("The user likes Comedy.\n\nQuestion: Next?", "The user likes Comedy."),
    ("", ""),
]


@pytest.mark.parametrize(("raw", "clean"), NORMALISE_CASES)
def test_normalise_answer(raw, clean):
    assert normalise_answer(raw) == clean


def test_normalise_is_idempotent():
    for raw, _ in NORMALISE_CASES:
        once = normalise_answer(raw)
        assert normalise_answer(once) == once
