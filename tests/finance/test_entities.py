"""Entity extraction: cashtags, whole-word watchlist names, the document's own tickers."""

import pytest

from core.foundation.errors import UserError
from solutions.finance.entities import EntityMatcher, load_watchlist

WATCH = {"ORBT": ["Orbit Logistics", "Orbit"], "ACME": ["Acme Corp", "Acme"]}


def test_cashtags_are_upper_cased_and_prices_are_not_tickers():
    m = EntityMatcher({})
    assert m.extract("$brdg down, $HALO up, crude at $81, US$5 and $BRK.B") == ["BRDG", "BRK.B", "HALO"]


def test_names_match_on_word_boundaries_only():
    m = EntityMatcher(WATCH)
    assert m.extract("Orbit Logistics raises fuel surcharge") == ["ORBT"]
    assert m.extract("Orbital launches and Acmeville news") == []
    assert m.extract("Shares of Acme, and orbit in lower case") == ["ACME"]  # names are case-sensitive


def test_document_tickers_and_text_are_merged():
    assert EntityMatcher(WATCH).extract("Acme Corp beats", ("nova",)) == ["ACME", "NOVA"]


def test_watchlist_yaml_is_validated(tmp_path):
    good = tmp_path / "w.yaml"
    good.write_text("acme: Acme Corp\nORBT: [Orbit]\n")
    assert load_watchlist(good) == {"ACME": ["Acme Corp"], "ORBT": ["Orbit"]}
    bad = tmp_path / "bad.yaml"
    bad.write_text("ACME: {name: 3}\n")
    with pytest.raises(UserError, match="list of names"):
        load_watchlist(bad)
    with pytest.raises(UserError, match="watchlist not found"):
        load_watchlist(tmp_path / "missing.yaml")


def test_a_name_inside_another_tickers_longer_name_still_counts_for_both():
    m = EntityMatcher({"ACGR": ["Acme Corp Group"], "ACME": ["Acme"], "ZED": ["Zed"]})
    assert m.extract("Acme Corp Group cuts jobs") == ["ACGR", "ACME"]  # "Acme" is a whole word in it too
    assert m.extract("Acmes and Zedd are other words") == []  # a substring that is not a whole word
    assert m.extract("no names, no tags") == [] and m.extract("$acme") == ["ACME"]
