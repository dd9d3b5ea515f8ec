"""--time-limit's clock and how durations are written (tzc_train/session.py)."""

import pytest

from tzc_train.session import Deadline, parse_duration


def test_time_limits_parse():
    assert parse_duration("8h40m") == 8 * 3600 + 40 * 60 and parse_duration("90m") == 5400
    assert parse_duration("1.5h") == 5400 and parse_duration("45s") == 45 and parse_duration("3600") == 3600
    for bad in ("", "8x", "h", "0", "-5m", "8h 40m"):
        with pytest.raises(ValueError, match="--time-limit"):
            parse_duration(bad)


def test_a_deadline_leaves_room_for_the_steps_in_flight_and_the_save():
    now = [100.0]
    deadline = Deadline(limit=200.0, started=0.0, reserve=60.0, clock=lambda: now[0])
    assert deadline.leaves_room_for(10.0)  # 100 + 2 x 10 + 60 < 200
    assert not deadline.leaves_room_for(21.0)
    now[0] = 139.0
    assert deadline.leaves_room_for(0.0) and not deadline.leaves_room_for(1.0)
    assert Deadline(limit=None, started=0.0).leaves_room_for(1e9)
