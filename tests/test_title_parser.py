"""LLMRank's answer rule (``parsing_output_text`` in RUCAIBox/LLMRank ``llmrank/model/rank.py``
at 5ec1154): each expected value below is that function applied by hand to the answer."""

from __future__ import annotations

import random

import pytest

from harness.rerankers.prompts.title_parser import (
    answer_name,
    first_match,
    lcs_length,
    parse_titles,
)

TITLES = (
    "Halo 3 - Xbox 360",
    " The Sims 3 - PC",  # Games-6k titles may start with a space
    "Marvel&rsquo;s Spider-Man - PlayStation 4",  # raw HTML entities, as the prompt shows them
    "Mario Kart 8 Deluxe - Nintendo Switch",
)
IDS = ("d3", "d1", "d0", "d2")


def parse(answer: str, titles=TITLES, ids=IDS):
    return parse_titles(answer, titles, ids)


def test_exact_titles_in_order_are_a_clean_permutation() -> None:
    answer = (
        "0. Mario Kart 8 Deluxe - Nintendo Switch\n1. Halo 3 - Xbox 360\n"
        "2. Marvel\u2019s Spider-Man - PlayStation 4\n3. The Sims 3 - PC"
    )
    parsed = parse(answer)
    assert parsed.permutation == (3, 0, 2, 1)
    assert parsed.status == "ok" and parsed.named == 4 and parsed.fuzzy == 0
    assert parsed.repairs == {}


def test_near_miss_titles_match_by_containment_or_subsequence() -> None:
    answer = (
        "1. Mario Kart 8 Deluxe\n"  # contained in the title
        "2. Halo 3 - Xbox 360 (a classic shooter)\n"  # contains the title
        "3. Marvel&rsquo;s Spider-Man - PlayStation 4\n"  # lcs 34 of 35 > 31.5
        "4. The Sims 3 -- PC"  # lcs 15 of 15
    )
    parsed = parse(answer)
    assert parsed.permutation == (3, 0, 2, 1)
    assert parsed.status == "ok" and parsed.fuzzy == 4


def test_a_name_below_the_similarity_bar_or_invented_names_nothing() -> None:
    # "Halo 2 - Xbox" shares 12 characters with "Halo 3 - Xbox 360" (17): 12 <= 15.3
    parsed = parse("1. Halo 2 - Xbox\n2. Zelda: Breath of the Wild\n3. Halo 3 - Xbox 360")
    assert parsed.permutation[:1] == (0,) and parsed.named == 1
    assert parsed.unmatched == 2 and parsed.status == "wrong_format"
    # never-named candidates follow in doc-id order (d0, d1, d2), not in the shown order
    assert parsed.permutation == (0, 2, 1, 3)
    assert parsed.repairs == {"unmatched_lines": 2, "missing": 3}


def test_a_repeated_candidate_is_dropped_and_never_falls_through() -> None:
    answer = "1. Halo\n2. Halo 2\n3. Tetris"
    # "Halo 2" contains "Halo", shown first: LLMRank matches line 2 to "Halo", already named,
    # and drops it, so "Halo 2" is never named
    parsed = parse(answer, ("Halo", "Halo 2", "Tetris"), ("a", "b", "c"))
    assert parsed.permutation == (0, 2, 1)
    assert parsed.duplicates == 1 and parsed.missing == 1 and parsed.status == "repetition"
    # shown the other way round, line 1 ("Halo", contained in "Halo 2") names "Halo 2", and
    # line 2 is the repeat: the shown order decides which candidate a line names
    swapped = parse(answer, ("Halo 2", "Halo", "Tetris"), ("b", "a", "c"))
    assert swapped.permutation == (0, 2, 1)  # "Halo 2", "Tetris", then "Halo"
    assert swapped.fuzzy == 1 and swapped.status == "repetition"


def test_the_same_title_twice_names_only_the_first_shown() -> None:
    parsed = parse("1. Tetris\n2. Tetris", ("Pong", "Tetris", "Tetris"), ("z", "y", "x"))
    assert parsed.permutation == (1, 2, 0)  # then x, z by doc id
    assert parsed.duplicates == 1 and parsed.status == "repetition"


def test_missing_items_headers_and_blank_lines() -> None:
    answer = "Here is the ranking of the 4 candidate movies:\n\n1. Halo 3 - Xbox 360\n"
    parsed = parse(answer)
    assert parsed.headers == 1 and parsed.named == 1
    assert parsed.status == "wrong_format"  # the header is prose around the list
    clean = parse("1. Halo 3 - Xbox 360\n\n2. The Sims 3 - PC\n")
    assert clean.status == "missing" and clean.permutation == (0, 1, 2, 3)
    nothing = parse("I cannot rank these.")
    assert nothing.status == "wrong_format" and nothing.named == 0
    assert nothing.permutation == (2, 1, 3, 0)  # all by doc id: d0, d1, d2, d3


def test_line_numbers_are_cut_as_llmrank_cuts_them() -> None:
    assert answer_name("12. Halo 3") == "Halo 3"
    assert answer_name("Halo 3. The best") == "Halo 3. The best"  # "Halo 3" is not digits
    assert answer_name("1.Halo 3") == "1.Halo 3"  # no ". ": line[:-1] is not digits
    assert answer_name("12") == "2"  # no ". ": line[:-1] == "1" is digits, so line[1:]
    assert answer_name("1. ") == ""  # names "", contained in every title
    assert first_match("", ["Pong", "Tetris"]) == 0
    assert first_match("2", ["Pong", "Halo 2"]) == 1


@pytest.mark.parametrize(
    ("a", "b", "length"),
    [
        ("We are shannonai", "We like shannonai", 14),  # pylcs's README example
        ("", "abc", 0),
        ("abc", "abc", 3),
        ("Marvel\u2019s", "Marvel&rsquo;s", 7),  # characters, not UTF-8 bytes
    ],
)
def test_lcs_length_known_cases(a: str, b: str, length: int) -> None:
    assert lcs_length(a, b) == length == lcs_length(b, a)


def test_lcs_length_equals_the_textbook_dynamic_programme() -> None:
    def textbook(a: str, b: str) -> int:
        row = [0] * (len(b) + 1)
        for x in a:
            prev = 0
            for j, y in enumerate(b, start=1):
                prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
        return row[-1]

    rng = random.Random(0)
    for _ in range(500):
        a = "".join(rng.choice("abc \u2019") for _ in range(rng.randint(0, 70)))
        b = "".join(rng.choice("abc \u2019") for _ in range(rng.randint(0, 70)))
        assert lcs_length(a, b) == textbook(a, b), (a, b)


def test_titles_and_ids_must_pair_up() -> None:
    with pytest.raises(ValueError, match="one doc id per title"):
        parse_titles("x", ("a", "b"), ("1",))
