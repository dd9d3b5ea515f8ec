from tzc_data.record import REASONS, controlled_by


def test_every_reason_says_what_controls_it_in_words():
    assert controlled_by("duplicate") == "controlled by --no-dedup"
    assert controlled_by("tag_in_content") == "no option keeps these (would be unparseable)"
    assert all("none" not in controlled_by(reason) for reason in REASONS)


def test_each_reason_is_controlled_by_an_option_or_by_none():
    """The guardrail's words read "controlled by fix the source" for malformed rows."""
    assert controlled_by("malformed") == "no option keeps these (fix the source)"
    for reason in REASONS:
        words = controlled_by(reason)
        assert words.startswith(("controlled by --", "no option keeps these (")), (reason, words)
