"""Source quotes from an LLM are anchored to the chunk's own characters, or rejected."""

import pytest

from pwd_agent.llm.quotes import anchor_quote

TEXT = ("First, the alum dose is injected into the raw water \u2014 at a point of strong turbulence.\n"
        "Then the alum dissolves and forms \u201cpositively charged\u201d aluminium species.")


@pytest.mark.parametrize("quote, span", [
    ("the alum dose is injected into the raw water", "the alum dose is injected into the raw water"),
    ("The alum dose is injected", "the alum dose is injected"),                 # capital at the start
    ("turbulence. Then the alum dissolves", "turbulence.\nThen the alum dissolves"),  # line break
    ('forms "positively charged" aluminium species.', "forms \u201cpositively charged\u201d aluminium species"),
    ("raw water - at a point", "raw water \u2014 at a point"),                  # dash folded
    ("  'Then the alum dissolves...'", "Then the alum dissolves"),              # edge punctuation
])
def test_surface_changes_are_anchored_to_the_chunk(quote, span):
    assert anchor_quote(quote, TEXT) == span
    assert span in TEXT


@pytest.mark.parametrize("quote", [
    "the alum dose is added to the raw water",   # a changed word
    "the alum ... aluminium species",            # an elision joins two spans
    "the alum",                                  # too short to prove anything
    "",
])
def test_changed_or_trivial_quotes_are_rejected(quote):
    assert anchor_quote(quote, TEXT) is None
