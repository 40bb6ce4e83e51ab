"""benchmarks/record.py: a record refreshes its table in the page that holds the block, with the
plots linked as a docs page (docs/results is benchmarks/results) sees them."""

from __future__ import annotations

from benchmarks import record


def test_page_links_point_plots_at_results():
    table = "![a](x.png) ![b](benchmarks/results/y.png) ![c](results/z.png) [t](x.md)"
    assert record.page_links(table) == "![a](results/x.png) ![b](results/y.png) ![c](results/z.png) [t](x.md)"


def test_write_record_refreshes_only_the_named_block(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- bench:demo -->\nold\n<!-- /bench:demo -->\n<!-- bench:other -->\nkeep\n<!-- /bench:other -->\n")
    monkeypatch.setattr(record, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(record, "PAGES", [page, tmp_path / "missing.md"])
    path = record.write_record("demo", {"metrics": {"x": 1}}, "| a |\n![p](demo.png)")
    assert path == tmp_path / "results" / "demo.json" and (tmp_path / "results" / "demo.md").read_text().endswith("(demo.png)")
    assert page.read_text() == ("intro\n<!-- bench:demo -->\n| a |\n![p](results/demo.png)\n<!-- /bench:demo -->\n"
                                "<!-- bench:other -->\nkeep\n<!-- /bench:other -->\n")
