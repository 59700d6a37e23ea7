"""Pure window and cursor arithmetic."""

from __future__ import annotations

import pytest

from tap_rapid7.windows import (
    Cursor,
    Window,
    WindowFilter,
    iso_to_millis,
    millis_to_iso,
    plan_windows,
    sync_end_millis,
)


def test_iso_and_millis_round_trip_exactly():
    assert iso_to_millis("2024-01-01T00:00:00Z") == 1_704_067_200_000
    assert iso_to_millis("2024-01-01T00:00:00.999+00:00") == 1_704_067_200_999
    assert iso_to_millis("2024-01-01T01:00:00+01:00") == 1_704_067_200_000
    assert iso_to_millis("2024-01-01T00:00:00") == 1_704_067_200_000  # naive = UTC
    assert millis_to_iso(1_704_067_200_999) == "2024-01-01T00:00:00.999+00:00"
    for millis in (0, 1, 999, 1_605_102_271_671, 1_704_067_200_001):
        assert iso_to_millis(millis_to_iso(millis)) == millis


def test_windows_are_half_open_contiguous_and_bounded():
    windows = list(plan_windows(1000, 4500, 1000))
    assert windows == [
        Window(1000, 2000),
        Window(2000, 3000),
        Window(3000, 4000),
        Window(4000, 4500),
    ]
    assert list(plan_windows(5000, 5000, 1000)) == []
    assert list(plan_windows(6000, 5000, 1000)) == []
    with pytest.raises(ValueError, match="window_seconds"):
        list(plan_windows(0, 10, 0))
    assert Window(1000, 2000).contains(1000)
    assert not Window(1000, 2000).contains(2000)


def test_sync_end_is_end_date_or_now_minus_lag():
    assert sync_end_millis("2024-01-01T00:00:00Z", 99_999_999, 300) == 1_704_067_200_000
    assert sync_end_millis(None, 1_000_000, 300) == 700_000
    assert sync_end_millis(None, 1_000_000, 0.5) == 999_500


def test_cursor_state_round_trip_holds_only_ints_and_strings():
    big = 3237201778429120512
    fields = Cursor(1500, big).state_fields()
    assert fields == {"next_from_millis": 1500, "next_from_sequence_number_str": str(big)}
    assert Cursor.from_state(fields) == Cursor(1500, big)
    assert Cursor(2000).state_fields() == {
        "next_from_millis": 2000,
        "next_from_sequence_number_str": "",
    }
    assert Cursor.from_state(Cursor(2000).state_fields()) == Cursor(2000, None)
    assert Cursor.from_state({}) is None
    with pytest.raises(ValueError, match="next_from_millis"):
        Cursor.from_state({"next_from_millis": 1.5})


def test_cursor_order_is_timestamp_then_sequence():
    cursor = Cursor(1500, 100)
    assert cursor.already_emitted(1499, 10**18)  # earlier millisecond, whatever the number
    assert cursor.already_emitted(1500, 100)
    assert not cursor.already_emitted(1500, 101)
    assert not cursor.already_emitted(1501, 1)  # sequence numbers restart across milliseconds
    assert not Cursor(1500).already_emitted(1500, 0)


def test_filter_counts_out_of_window_duplicates_and_resume_skips():
    filt = WindowFilter(Window(1000, 2000), resume=Cursor(1000, 5))
    decisions = [
        filt.accept(999, 1, "1"),  # before the window
        filt.accept(1000, 5, "5"),  # emitted by the previous run
        filt.accept(1000, 6, "6"),
        filt.accept(1000, 6, "6"),  # duplicate
        filt.accept(1999, 2, "2"),
        filt.accept(2000, 3, "3"),  # `to` belongs to the next window
    ]
    assert decisions == [False, False, True, False, True, False]
    assert (
        filt.accepted,
        filt.duplicates_dropped,
        filt.out_of_window_dropped,
        filt.resume_skipped,
    ) == (
        2,
        1,
        2,
        1,
    )
    assert filt.start_from_ms() == 1999
    assert filt.next_from_millis() == 1999


def test_burst_straddling_windows_and_restarts_is_emitted_once():
    # 6 events in one millisecond at a window boundary, re-read after a restart.
    burst = [(2000, 10 + i, str(10 + i)) for i in range(6)]
    first = WindowFilter(Window(1000, 2000))
    assert [first.accept(*e) for e in burst] == [False] * 6  # all belong to the next window
    second = WindowFilter(Window(2000, 3000))
    emitted = [e for e in burst[:4] if second.accept(*e)]
    assert second.start_from_ms() == 2000
    emitted += [e for e in burst if second.accept(*e)]  # the restarted query re-reads all
    assert emitted == burst
    assert second.duplicates_dropped == 4
