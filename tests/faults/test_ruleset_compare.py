"""The ruleset comparison the consistency check uses: order-insensitive where nft's listing
order is an accident (chains, sets, set elements), sensitive to any real difference."""

from __future__ import annotations

from pycalico.testing.faults import normalise_ruleset

LISTING = """table inet calico {
\tset a {
\t\ttype ipv4_addr
\t\telements = { 10.0.0.2, 10.0.0.1 }
\t}
\tchain x {
\t\tjump y
\t}
\tchain y {
\t\taccept
\t}
}
"""
REORDERED = """table inet calico {
\tchain y {
\t\taccept
\t}
\tset a {
\t\ttype ipv4_addr
\t\telements = { 10.0.0.1,
\t\t\t     10.0.0.2 }
\t}
\tchain x {
\t\tjump y
\t}
}
"""


def test_listing_order_does_not_matter() -> None:
    assert normalise_ruleset(LISTING) == normalise_ruleset(REORDERED)


def test_a_deleted_chain_a_flushed_set_or_a_changed_rule_differs() -> None:
    without_chain = LISTING.replace("\tchain y {\n\t\taccept\n\t}\n", "")
    flushed = LISTING.replace("\t\telements = { 10.0.0.2, 10.0.0.1 }\n", "")
    changed = LISTING.replace("\t\taccept", "\t\tdrop")
    wanted = normalise_ruleset(LISTING)
    for other in (without_chain, flushed, changed):
        assert normalise_ruleset(other) != wanted
