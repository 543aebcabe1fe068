"""The RankGPT answer parser: each malformed answer, its exact repaired permutation and status."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.rerankers.prompts.permutation_parser import (
    ascii_digits,
    parse_permutation,
    worst_status,
)

# (answer, window size, repaired 0-based permutation, status)
CASES = [
    ("[2] > [1] > [4] > [3]", 4, (1, 0, 3, 2), "ok"),
    ("  [2] > [1] > [4] > [3]\n", 4, (1, 0, 3, 2), "ok"),
    ("[2]>[1]>[4]>[3]", 4, (1, 0, 3, 2), "ok"),
    # empty / no identifiers: shown order
    ("", 4, (0, 1, 2, 3), "wrong_format"),
    ("I cannot rank these passages.", 4, (0, 1, 2, 3), "wrong_format"),
    # duplicates: first mention wins
    ("[2] > [2] > [1] > [4] > [3]", 4, (1, 0, 3, 2), "repetition"),
    ("[1] > [2] > [3] > [4] > [4]", 4, (0, 1, 2, 3), "repetition"),
    ("[2] > [1] > [2] > [1]", 4, (1, 0, 2, 3), "repetition"),  # also missing: worst wins
    # missing ids: appended in shown order
    ("[2] > [4]", 4, (1, 3, 0, 2), "missing"),
    ("[12] > [3] > [1]", 12, (11, 2, 0, 1, 3, 4, 5, 6, 7, 8, 9, 10), "missing"),
    # out-of-range ids: dropped
    ("[5] > [2] > [1] > [4] > [3]", 4, (1, 0, 3, 2), "wrong_format"),
    ("[0] > [2] > [1]", 4, (1, 0, 2, 3), "wrong_format"),
    ("[10] > [1]", 4, (0, 1, 2, 3), "wrong_format"),
    # text around the list, other separators
    ("Ranking: [3] > [1] > [2] > [4]", 4, (2, 0, 1, 3), "wrong_format"),
    ("[3] > [1] > [2] > [4] and so on", 4, (2, 0, 1, 3), "wrong_format"),
    ("2 > 1 > 4 > 3", 4, (1, 0, 3, 2), "wrong_format"),
    ("[4][3][2][1]", 4, (3, 2, 1, 0), "wrong_format"),
    ("The most relevant is [3], then [1]", 4, (2, 0, 1, 3), "wrong_format"),
    # look-alike digits: fullwidth, Arabic-Indic, Devanagari
    ("[\uff13] > [\uff11] > [\uff12] > [\uff14]", 4, (2, 0, 1, 3), "wrong_format"),
    ("[\u0663] > [\u0661] > [\u0662] > [\u0664]", 4, (2, 0, 1, 3), "wrong_format"),
    ("[\u0968] > [\u0967]", 2, (1, 0), "wrong_format"),
    ("[\uff11\uff12] > [1]", 12, (11, 0, *range(1, 11)), "wrong_format"),
    # think blocks: everything up to the last </think> is dropped
    ("<think>[1] > [2] looks wrong</think>[4] > [3] > [2] > [1]", 4, (3, 2, 1, 0), "ok"),
    ("<think>a</think> b </think>\n[2] > [1] > [3] > [4]", 4, (1, 0, 2, 3), "ok"),
    ("<think>[3] > [1]</think>", 4, (0, 1, 2, 3), "wrong_format"),
    ("<think>never closed [3] > [1]", 4, (2, 0, 1, 3), "wrong_format"),
]


@pytest.mark.parametrize(("answer", "size", "permutation", "status"), CASES)
def test_repaired_permutation_and_status(
    answer: str, size: int, permutation: tuple[int, ...], status: str
) -> None:
    parsed = parse_permutation(answer, size)
    assert parsed.permutation == permutation
    assert parsed.status == status
    assert sorted(parsed.permutation) == list(range(size))


def test_the_table_covers_every_repair() -> None:
    assert len(CASES) >= 15
    assert {status for *_, status in CASES} == {"ok", "wrong_format", "repetition", "missing"}


def test_repairs_are_counted() -> None:
    parsed = parse_permutation("note: [2] > [9] > [2] > [1]", 4)
    assert parsed.permutation == (1, 0, 2, 3)
    assert parsed.repairs == {
        "duplicates": 1,
        "out_of_range": 1,
        "missing": 2,
        "not_strict_format": 1,
    }
    assert parsed.named == 2
    clean = parse_permutation("[1] > [2]", 2)
    assert clean.repairs == {} and clean.strict_format and not clean.look_alike_digits
    assert parse_permutation("[\uff11] > [2]", 2).repairs == {"look_alike_digits": 1}


def test_ascii_digits_maps_every_look_alike_digit_and_nothing_else() -> None:
    assert ascii_digits("\uff10\u0660\u06f5\u0966\u09ea 7 x²") == "00504 7 x2"
    # superscript, subscript, circled, dingbat, "digit full stop": rank_llm's table and more
    # U+1F100 is DIGIT ZERO FULL STOP and U+1F109 DIGIT EIGHT COMMA: Unicode's digit value,
    # where rank_llm's table maps by position (and reads U+1F109 as 9)
    assert ascii_digits("⁰¹⁹ ₀₅₉ ①⑨ ❶❾ \U0001f100\U0001f109") == "019 059 19 19 08"
    assert ascii_digits("Ⅻ ½ ⑩ abc [] >") == "Ⅻ ½ ⑩ abc [] >"  # no single digit value


def test_look_alike_digits_parse_as_their_digits() -> None:
    parsed = parse_permutation("[³] > [①] > [₂]", 3)
    assert parsed.permutation == (2, 0, 1) and parsed.look_alike_digits
    assert parsed.status == "wrong_format"  # recorded as a repair


def test_a_huge_identifier_is_out_of_range_not_a_crash() -> None:
    parsed = parse_permutation("[" + "9" * 5000 + "] > [2]", 3)
    assert parsed.out_of_range == 1 and parsed.permutation == (1, 0, 2)
    assert parse_permutation("[0003] > [1] > [2]", 3).permutation == (2, 0, 1)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200), size=st.integers(min_value=1, max_value=40))
def test_any_answer_parses_to_a_permutation(text: str, size: int) -> None:
    parsed = parse_permutation(text, size)
    assert sorted(parsed.permutation) == list(range(size))
    assert parsed.named + parsed.missing == size
    assert parsed.status in ("ok", "missing", "repetition", "wrong_format")


def test_worst_status_orders_by_severity() -> None:
    assert worst_status(["ok", "missing", "ok"]) == "missing"
    assert worst_status(["repetition", "missing"]) == "repetition"
    assert worst_status(["ok", "wrong_format", "repetition"]) == "wrong_format"
    assert worst_status(["ok"]) == "ok"
    assert worst_status([]) == "not_applicable"


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        parse_permutation("[1]", 0)
