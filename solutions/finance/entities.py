"""Which companies a document talks about: cashtags, a watchlist of names, and its own `tickers`.

- Cashtags: `$AAPL`, `$brk.b` (1-6 letters, an optional .class suffix), upper-cased. Any cashtag
  counts, watchlist or not; a `$` followed by digits (`$81`) is a price, not a ticker.
- Watchlist YAML: `TICKER: [name, alias, ...]`. Names match whole words only ("Orbit" does not
  match "Orbital"), case-sensitively: company names are proper nouns, and "Halo" the company
  should not fire on "halo effect" (it still does on "Halo" at the start of a sentence; add a
  longer alias instead of a short one when that matters).
- A document's own `tickers` field, once the door let it in: ticker-shaped or watched
  (solutions.finance.monitor.sources.check_tickers).
Leaves out: fuzzy matching and entity disambiguation models.
"""

from __future__ import annotations

import re
from pathlib import Path

from core.foundation.errors import UserError
from core.foundation.settings import read_yaml_mapping

CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:\.[A-Za-z]{1,2})?)\b")


def load_watchlist(path: Path | None) -> dict[str, list[str]]:
    """TICKER -> names, from YAML; UserError on anything else."""
    if path is None:
        return {}
    raw = read_yaml_mapping(path, "watchlist", "TICKER: [name, alias, ...]")
    out = {}
    for ticker, names in raw.items():
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise UserError(f"watchlist {path}: {ticker} must map to a list of names, e.g. "
                            f"{ticker}: [\"Acme Corp\", \"Acme\"]")
        out[str(ticker).strip().upper()] = [n.strip() for n in names]
    return out


class EntityMatcher:
    def __init__(self, watchlist: dict[str, list[str]]):
        self.watchlist = dict(watchlist)
        self._patterns: dict[str, re.Pattern] = {}
        for ticker, names in self.watchlist.items():
            # longest first inside one alternation, so "Acme Corp" wins over "Acme"
            alternation = "|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True))
            if alternation:
                self._patterns[ticker] = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)")
        # (name, ticker) pairs: a plain substring test finds the few tickers whose whole-word pattern
        # can match at all (it runs per sentence, and a watchlist has tens of tickers)
        self._substrings = [(n, t) for t in self._patterns for n in set(self.watchlist[t])]

    def extract(self, text: str, tickers: tuple[str, ...] = ()) -> list[str]:
        """Sorted, de-duplicated tickers mentioned in `text` (plus the document's own `tickers`)."""
        found = {t.upper() for t in tickers}
        if "$" in text:
            found.update(m.group(1).upper() for m in CASHTAG.finditer(text))
        candidates = {ticker for name, ticker in self._substrings if name in text}
        found.update(ticker for ticker in candidates if self._patterns[ticker].search(text))
        return sorted(found)
