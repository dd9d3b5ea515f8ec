from tzc_data.record import REASONS, controlled_by


def test_every_reason_says_what_controls_it_in_words():
    assert controlled_by("duplicate") == "controlled by --no-dedup"
    assert controlled_by("tag_in_content") == "no option keeps these (would be unparseable)"
    assert all("none" not in controlled_by(reason) for reason in REASONS)
