"""`verticals finance ...` in-process: user mistakes print a message and exit 2; report writes a page."""

from verticals.cli import main
from tests.finance.conftest import demo_stream_dir


def test_monitor_with_a_missing_model_says_how_to_get_one(tmp_path, capsys):
    code = main(["finance", "monitor", str(demo_stream_dir() / "stream.jsonl"), "--db", str(tmp_path / "m.db"),
                 "--model", str(tmp_path / "nope")])
    assert code == 2 and "verticals train finance/sentiment-full" in capsys.readouterr().err


def test_monitor_with_a_missing_input_is_a_user_error(tmp_path, capsys):
    code = main(["finance", "monitor", str(tmp_path / "nope.jsonl"), "--db", str(tmp_path / "m.db"),
                 "--model", "zeroshot"])
    assert code == 2 and "input file not found" in capsys.readouterr().err


def test_report_command_writes_the_page(tmp_path, keyword_model, capsys):
    from solutions.finance.monitor.loop import MonitorConfig, run_monitor

    run_monitor(MonitorConfig(inputs=(str(demo_stream_dir() / "stream.jsonl"),), db=tmp_path / "m.db",
                              model="unused", sinks=(), drain_seconds=0), model=keyword_model)
    assert main(["finance", "report", "--db", str(tmp_path / "m.db"), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
