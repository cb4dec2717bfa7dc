r"""Translation metrics on characters: edit distance, character error rate, exact match.

A source sentence often has several correct translations (the data lists every French
translation of an English sentence), so each hypothesis is scored against its *closest*
reference: the one with the lowest character error rate,

.. math::
    \operatorname{CER}(h, R) = \min_{r \in R} \frac{\operatorname{lev}(h, r)}{|r|}

where :math:`\operatorname{lev}` is the Levenshtein distance (insertions, deletions and
substitutions of one character each cost 1) and :math:`|r|` the reference's length in
characters. Choosing the reference by its *rate* rather than by the raw edit count does not
favour short references. Over a corpus the edits and reference lengths are summed before
dividing, each sentence with its closest reference (ties: fewer edits, then the first listed):

.. math::
    \operatorname{CER}_\text{corpus} = \frac{\sum_i \operatorname{lev}(h_i, r_i^*)}{\sum_i |r_i^*|}

so long sentences weigh more than short ones, as in speech recognition's WER. A CER can exceed
1 (a hypothesis much longer than its reference).
"""

from __future__ import annotations

from collections.abc import Sequence


def levenshtein(a: Sequence[object], b: Sequence[object]) -> int:
    r"""The fewest single-element insertions, deletions and substitutions turning ``a`` into ``b``.

    Dynamic programming over prefixes, one row at a time: with :math:`D_{i,j}` the distance
    between ``a[:i]`` and ``b[:j]``, :math:`D_{i,0} = i`, :math:`D_{0,j} = j` and

    .. math::
        D_{i,j} = \min\big(D_{i-1,j} + 1,\ D_{i,j-1} + 1,\ D_{i-1,j-1} + [a_i \ne b_j]\big)

    :math:`O(|a|\,|b|)` time, :math:`O(|b|)` memory. Works on strings and on lists of tokens.
    """
    if len(a) < len(b):
        a, b = b, a  # the shorter one indexes the row
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def _as_references(references: str | Sequence[str]) -> list[str]:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("at least one reference is needed")
    if any(len(r) == 0 for r in refs):
        raise ValueError(f"references must be non-empty strings (a CER divides by their length), got {refs!r:.120}")
    return refs


def closest_reference(hypothesis: str, references: str | Sequence[str]) -> tuple[int, int]:
    """``(edits, reference length)`` for the reference with the lowest CER (ties: fewer edits, then first)."""
    scored = [(levenshtein(hypothesis, r), len(r)) for r in _as_references(references)]
    return min(scored, key=lambda s: (s[0] / s[1], s[0]))


def character_error_rate(hypothesis: str, references: str | Sequence[str]) -> float:
    r""":math:`\min_r \operatorname{lev}(h, r) / |r|` over one or several references (module docs)."""
    edits, length = closest_reference(hypothesis, references)
    return edits / length


def corpus_character_error_rate(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Summed edits over summed lengths of each hypothesis's closest reference (module docs)."""
    _check_aligned(hypotheses, references)
    edits = length = 0
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        e, n = closest_reference(hypothesis, refs)
        edits, length = edits + e, length + n
    return edits / length


def exact_match(hypothesis: str, references: str | Sequence[str]) -> bool:
    """Whether the hypothesis equals one of the references, character for character."""
    return hypothesis in _as_references(references)


def exact_match_rate(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """The fraction of hypotheses that equal one of their references."""
    _check_aligned(hypotheses, references)
    return sum(exact_match(h, r) for h, r in zip(hypotheses, references, strict=True)) / len(hypotheses)


def _check_aligned(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]) -> None:
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(
            f"expected one reference list per hypothesis (and at least one), got {len(hypotheses)} hypotheses "
            f"and {len(references)} reference lists"
        )
