"""Paired comparison of two rounds on the same items: flips and an exact McNemar (sign) test."""

from __future__ import annotations

from dataclasses import dataclass
from math import comb


@dataclass(frozen=True)
class Flips:
    fixed: int          # failed before, passes now
    broken: int         # passed before, fails now
    still_failing: int  # failed both times
    p_value: float      # one-sided: chance of this many fixes or more if fixing and breaking were a coin flip


def exact_mcnemar_p(fixed: int, broken: int) -> float:
    """P(X >= fixed) for X ~ Binomial(fixed + broken, 1/2): only items that flipped carry evidence."""
    n = fixed + broken
    if n == 0:
        return 1.0
    return sum(comb(n, k) for k in range(fixed, n + 1)) / 2**n


def compare(before: dict[int, bool], after: dict[int, bool]) -> Flips:
    """Flips between two rounds over the items both scored."""
    shared = before.keys() & after.keys()
    fixed = sum(1 for i in shared if after[i] and not before[i])
    broken = sum(1 for i in shared if before[i] and not after[i])
    still = sum(1 for i in shared if not before[i] and not after[i])
    return Flips(fixed, broken, still, exact_mcnemar_p(fixed, broken))
