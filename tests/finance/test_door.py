"""What a document may carry into the monitor (solutions.finance.monitor.sources): a producer's tickers
must look like tickers or be watched, and a NUL is refused in every field, with the reason."""

from __future__ import annotations

import json

import pytest

from core.foundation.errors import UserError
from solutions.finance.monitor.loop import MonitorConfig
from solutions.finance.monitor.sources import Malformed, parse_document


def line(**fields) -> str:
    return json.dumps({"id": "d1", "ts": "2026-03-02T09:15:00Z", "text": "Acme rallies.", **fields})


@pytest.mark.parametrize("ticker", ["AAPL", "$brk.b", "msft"])
def test_ticker_shaped_tickers_are_kept(ticker):
    assert parse_document(line(tickers=[ticker])).tickers == (ticker.lstrip("$").upper(),)


@pytest.mark.parametrize("ticker", ["<img src=x onerror=alert(8)>", "DROP TABLE", "TOOLONGTICKER", "A1", "7203.T"])
def test_other_tickers_quarantine_the_document_unless_watched(ticker):
    with pytest.raises(Malformed, match="bad tickers: .* neither a ticker"):
        parse_document(line(tickers=[ticker]))
    watched = frozenset({ticker.upper()})
    assert parse_document(line(tickers=[ticker]), known_tickers=watched).tickers == (ticker.upper(),)


def test_the_ignore_policy_drops_the_bad_ticker_and_keeps_the_document(caplog):
    doc = parse_document(line(tickers=["AAPL", "<b>x</b>"]), bad_tickers="ignore")
    assert doc.tickers == ("AAPL",) and "ignored ticker" in caplog.text
    with pytest.raises(UserError, match="bad_tickers"):
        MonitorConfig(inputs=("-",), db="x.db", model="zeroshot", bad_tickers="drop")


@pytest.mark.parametrize("field,value", [("text", "Acme\u0000 rallies"), ("id", "d\u00001"), ("source", "wire\u0000"),
                                         ("tickers", ["AA\u0000PL"])])
def test_a_nul_is_refused_in_every_field(field, value):
    with pytest.raises(Malformed, match=rf"bad {field}: holds a NUL"):
        parse_document(line(**{field: value}))
