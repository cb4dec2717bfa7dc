"""Edit distance and character error rate against hand-computed cases."""

from __future__ import annotations

import pytest

from scratch_transformer.metrics import (
    character_error_rate,
    closest_reference,
    corpus_character_error_rate,
    exact_match,
    exact_match_rate,
    levenshtein,
)


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("", "", 0),
        ("", "abc", 3),  # three insertions
        ("abc", "", 3),  # three deletions
        ("abc", "abc", 0),
        ("abc", "abd", 1),  # one substitution
        ("kitten", "sitting", 3),  # k->s, e->i, insert g
        ("flaw", "lawn", 2),  # delete f, insert n
        ("intention", "execution", 5),
        ("Va !", "Va-t'en !", 5),  # insert "-t'en"
        ("chat", "tchat", 1),
        ("ab", "ba", 2),  # no transpositions in Levenshtein
        ("été", "ete", 2),  # accented letters are other characters
    ],
)
def test_levenshtein(a: str, b: str, distance: int) -> None:
    assert levenshtein(a, b) == distance
    assert levenshtein(b, a) == distance  # symmetric


def test_levenshtein_on_token_lists() -> None:
    assert levenshtein([1, 2, 3], [1, 3]) == 1


def test_character_error_rate_uses_the_closest_reference() -> None:
    # "Je suis." vs "Je suis là." : 3 insertions / 11; vs "Je suis ici." : 4 / 12
    assert character_error_rate("Je suis.", "Je suis là.") == pytest.approx(3 / 11)
    assert character_error_rate("Je suis.", ["Je suis ici.", "Je suis là."]) == pytest.approx(3 / 11)
    assert character_error_rate("Je suis là.", ["Je suis ici.", "Je suis là."]) == 0.0
    # closest by rate, not by edit count: 2 edits / 2 characters = 1.0 loses to 4 edits / 8 = 0.5
    assert closest_reference("abcd", ["ab", "abcdefgh"]) == (4, 8)
    assert character_error_rate("abcd", ["ab", "abcdefgh"]) == 0.5
    assert character_error_rate("aaaa", "a") == 3.0  # can exceed 1


def test_corpus_cer_sums_edits_over_reference_lengths() -> None:
    hypotheses = ["Va !", "Je suis.", "Merci."]
    references = [["Va !", "Pars !"], ["Je suis là.", "Je suis ici."], "Merci !"]
    # edits: 0, 3 (see above), and "Merci." -> "Merci !": substitute "." with " ", insert "!"
    assert levenshtein("Merci.", "Merci !") == 2
    assert corpus_character_error_rate(hypotheses, references) == pytest.approx((0 + 3 + 2) / (4 + 11 + 7))
    # not the mean of the sentence rates
    mean = (0 + 3 / 11 + 2 / 7) / 3
    assert corpus_character_error_rate(hypotheses, references) != pytest.approx(mean)


def test_exact_match() -> None:
    assert exact_match("Va !", ["Pars !", "Va !"])
    assert not exact_match("Va!", "Va !")
    assert exact_match_rate(["Va !", "Va!"], [["Va !"], ["Va !"]]) == 0.5


def test_bad_input_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="at least one reference"):
        character_error_rate("a", [])
    with pytest.raises(ValueError, match="references must be non-empty strings"):
        character_error_rate("a", ["b", ""])
    with pytest.raises(ValueError, match="got 2 hypotheses and 1 reference lists"):
        corpus_character_error_rate(["a", "b"], [["a"]])
