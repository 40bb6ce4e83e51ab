"""Windows and alert rules on hand-computed numbers."""

import math

import pytest

from core.foundation.errors import UserError
from solutions.finance.monitor.aggregate import StreamClock, WindowStats, parse_duration, window_start, window_stats
from solutions.finance.monitor.loop import ClosedWindows
from solutions.finance.monitor.rules import (Baseline, NegativeShareSpike, RuleSet, SentimentDrop, VolumeSpike,
                                             load_rules)


def _window(count, negative, score_sum, start=7200):
    return WindowStats("ACME", start, 3600, count, negative, score_sum, 0.0)


def test_windows_align_to_the_epoch_and_durations_parse():
    assert window_start(7199.9, 3600) == 3600 and window_start(7200, 3600) == 7200
    assert [parse_duration(d) for d in ("90s", "15m", "1h", "7d", "30")] == [90, 900, 3600, 7 * 86400, 30]
    with pytest.raises(UserError, match="bad duration"):
        parse_duration("1 week")


def test_window_stats_count_mean_negative_share_and_ewma():
    first = window_stats("X", 0, 60, [0.5, -0.7, -0.4], ["positive", "negative", "negative"], None, 0.3)
    assert (first.count, first.negative_count) == (3, 2)
    assert first.mean_score == pytest.approx((0.5 - 0.7 - 0.4) / 3)
    assert first.negative_share == pytest.approx(2 / 3)
    assert first.ewma == pytest.approx(first.mean_score)  # the first window starts the EWMA
    second = window_stats("X", 60, 60, [1.0], ["positive"], first.ewma, 0.3)
    assert second.ewma == pytest.approx(0.3 * 1.0 + 0.7 * (-0.2))


def test_negative_share_spike_is_a_smoothed_binomial_z_score():
    base = Baseline(count=30, negative_count=3, score_sum=0.0, windows=168)
    window = _window(10, 6, -3.0)
    p0 = (3 + 0.2 * 10) / (30 + 10)  # 0.125
    z = (0.6 - p0) / math.sqrt(p0 * (1 - p0) / 10)  # 4.54
    found = NegativeShareSpike(z=4.5).evaluate(window, base)
    assert found.value == pytest.approx(0.6) and found.baseline == pytest.approx(p0)
    assert NegativeShareSpike(z=z + 0.01).evaluate(window, base) is None
    assert NegativeShareSpike(z=1.0, min_count=11).evaluate(window, base) is None


def test_sentiment_drop_against_the_shrunk_baseline_mean():
    base = Baseline(count=30, negative_count=0, score_sum=12.0, windows=168)  # mean0 = 12 / 40 = 0.3
    assert SentimentDrop(drop=0.5).evaluate(_window(5, 3, -1.0), base).baseline == pytest.approx(0.3)  # -0.2 <= -0.2
    assert SentimentDrop(drop=0.5).evaluate(_window(5, 3, -0.9), base) is None  # -0.18 > -0.2


def test_volume_spike_against_mean_count_per_window_with_a_floor():
    quiet = Baseline(count=24, negative_count=0, score_sum=0.0, windows=24)  # 1 per window
    assert VolumeSpike(ratio=4.0, min_count=3).evaluate(_window(4, 0, 0.0), quiet).baseline == pytest.approx(1.0)
    assert VolumeSpike(ratio=4.0, min_count=3).evaluate(_window(3, 0, 0.0), quiet) is None
    empty = Baseline(0, 0, 0.0, 24)  # rate 0 -> floor 0.5 -> needs 2 docs, and min_count
    assert VolumeSpike(ratio=4.0, min_count=5, min_rate=0.5).evaluate(_window(5, 0, 0.0), empty) is not None


def test_rules_yaml_overrides_defaults_and_rejects_unknown_keys(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("window: 15m\nbaseline: 1d\nvolume_spike: {enabled: false}\nsentiment_drop: {drop: 0.8}\n")
    rules = load_rules(path)
    assert (rules.window, rules.baseline, rules.baseline_windows) == (900, 86400, 96)
    assert [r.name for r in rules.rules] == ["negative_share_spike", "sentiment_drop"]
    assert rules.rules[1].drop == 0.8
    assert load_rules(path, window="1h").window == 3600
    path.write_text("negative_share_spike: {zz: 3}\n")
    with pytest.raises(UserError, match="unknown key 'zz'"):
        load_rules(path)


def test_stream_clock_closes_a_window_once_the_watermark_is_lateness_past_its_end():
    clock = StreamClock()
    on_time, clock = clock.admit(3000, 3600, 300)  # window [0, 3600)
    assert on_time and (clock.watermark, clock.closed_until) == (3000, 2700)
    on_time, clock = clock.admit(3850, 3600, 300)  # 3850 - 300 = 3550 < 3600: [0, 3600) still open
    assert on_time and not clock.is_closed(0, 3600)
    on_time, clock = clock.admit(3590, 3600, 300)  # arrives while its window is open: on time
    assert on_time and clock.watermark == 3850  # an older document never moves the watermark back
    _, clock = clock.admit(3900, 3600, 300)  # 3900 - 300 = 3600: [0, 3600) is closed
    assert clock.is_closed(0, 3600) and not clock.is_closed(3600, 3600)
    assert clock.admit(100, 3600, 300)[0] is False  # its window was closed when it arrived: late
    assert clock.flushed(3600).closed_until == 7200  # end of input closes the watermark's window too
    assert StreamClock().flushed(3600) == StreamClock()  # nothing read, nothing to close


def test_window_sums_do_not_depend_on_document_order():
    scores = [0.1, 0.2, 0.3]
    assert sum(scores) != sum(scores[::-1])  # 0.6000000000000001 vs 0.6: plain sums depend on order
    forward = window_stats("X", 0, 60, scores, ["neutral"] * 3, None, 0.3)
    backward = window_stats("X", 0, 60, scores[::-1], ["neutral"] * 3, None, 0.3)
    assert forward.score_sum == backward.score_sum == 0.6


def test_lateness_is_a_rules_setting_and_may_be_zero(tmp_path):
    path = tmp_path / "rules.yaml"
    assert load_rules().lateness == 300
    path.write_text("lateness: 0\n")
    assert load_rules(path).lateness == 0
    path.write_text("lateness: 15m\n")
    assert load_rules(path).lateness == 900
    assert parse_duration("0s", allow_zero=True) == 0
    with pytest.raises(UserError, match="bad duration"):
        parse_duration("0s")


class WindowsStore:
    """`window_scores` over fixed {entity: {start: (scores, labels)}}, recording the [since, until) asked."""

    def __init__(self, windows: dict):
        self.windows, self.asked = windows, []

    def window_scores(self, entity, since, until=2**62, *, on_time=False):
        assert on_time  # the alert rules read on-time documents only
        self.asked.append((since, until))
        return {s: v for s, v in self.windows.get(entity, {}).items() if since <= s < until}


def test_closed_windows_are_read_once_each_and_give_what_reading_the_whole_baseline_gives():
    hour = 3600
    rules = RuleSet(window=hour, baseline=3 * hour)
    windows = {h * hour: ([0.5 - h / 10], ["positive"]) for h in (0, 1, 3, 4, 5, 9)}  # hours 2, 6-8 empty
    store, closed = WindowsStore({"ACME": windows}), ClosedWindows(rules)
    for start in (3 * hour, 4 * hour, 5 * hour, 9 * hour, 1 * hour):  # the last goes back: read again
        expected = {s: window_stats("ACME", s, hour, scores, labels, None, rules.ewma_alpha)
                    for s, (scores, labels) in windows.items() if start - 3 * hour <= s <= start}
        assert closed.baseline_and_window(store, "ACME", start) == expected
    assert store.asked == [(0, 3 * hour + 1), (3 * hour + 1, 4 * hour + 1), (4 * hour + 1, 5 * hour + 1),
                           (6 * hour, 9 * hour + 1), (-2 * hour, 1 * hour + 1)]
