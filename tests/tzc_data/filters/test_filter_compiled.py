"""The compiled filters (tzc_data/filters/compiled/) against the Python definitions they replace.

Each compiled step is checked against the Python function it mirrors on generated inputs built to
reach its corners (units that share a length and their first and last 8 bytes, so that the digest
tables must compare bytes; runs of blank lines; a unit cut at every offset of an 8-byte word;
words the prompt holds), and the whole filter, compiled, against the whole filter in Python, on
texts made of a few lines, sentences and words repeated, cycled and quoted from the prompt, under
random thresholds. The decisions on every shared trace and 20,000 synthetic rows are pinned in
test_filter_decisions.py, for both.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tzc_data import native
from tzc_data.filters import EnglishFilter, RepetitionFilter, Verdict, apply_filters, english_score, repetition
from tzc_data.filters import compiled as package
from tzc_data.filters.base import COMPILE_FROM, Switch
from tzc_data.filters.compiled import english, judge, loops, quotes, split, tables, verdict
from tzc_data.filters.language import STOPWORDS
from tzc_data.filters.repetition import (
    _split,
    _unit_stats,
    cased,
    copy_run,
    cycling_tail,
    dup_ngram_share,
    folded,
    quoted,
    repeating_tail,
    top_ngram_share,
)
from tzc_data.record import Example


def array(data: bytes) -> np.ndarray:
    """``data`` as the compiled code reads it: zero-padded, 8 bytes at a time."""
    return np.frombuffer(tables.padded(data), dtype=np.uint8).copy()


# -- texts ------------------------------------------------------------------------------------------

LINES = ["Wait, let me check that again.", "Hmm.", "So the answer is 42.", "The answer is 4.",
         "Alternatively, the total is 355 plus 88, which gives 443 coins in all.",
         "Let me summarise the steps before writing the answer, carefully and in order.",
         "x = 3", "THE ANSWER IS 4.", "the answer is 4.", "  indented line with trailing spaces   ",
         "\\frac{144}{132,600} = \\frac{6}{5525}", "Let's verify: 2 + 2 = 4?", "Done!", "ok",
         "a line of exactly thirty chars", "Ünïcödé and émojis 🙂 here.", "Step 1: add. Step 2: divide.",
         # same length, same first 8 and last 8 bytes: only the middle tells them apart
         "abcdefgh-XXXXXXXXXXXXXXXXXXXXX-stuvwxyz", "abcdefgh-XXXXXXXXXXYXXXXXXXXXX-stuvwxyz",
         "abcdefgh-YXXXXXXXXXXXXXXXXXXXX-stuvwxyz",
         # long sentences and paragraphs of one length: ties between units that repeat as often
         "First we add the two numbers together and then we divide by three",
         "Next we take the remainder and check it against the divisor again",
         "We begin by restating the problem in our own words, listing every quantity that it gives and every one it "
         "asks for", "We finish by reading the question once more, matching each number in the answer to the quantity "
         "that it stands for"]
SEPARATORS = ["\n", "\n\n", "\n\n\n", " ", ". ", "? ", "! ", "\t", "\r\n", "", "  ", ".\n"]

pieces = st.lists(st.tuples(st.sampled_from(LINES), st.sampled_from(SEPARATORS)), max_size=60)


@st.composite
def texts(draw, cycles=True) -> str:
    """A text of lines and separators, with a cycle or a repeated unit at the end now and then."""
    text = "".join(line + sep for line, sep in draw(pieces))
    if cycles and draw(st.booleans()):
        few = draw(st.lists(st.sampled_from(LINES), min_size=1, max_size=4))
        rounds = draw(st.integers(1, 12))
        order = draw(st.randoms(use_true_random=False))
        end = []
        for _ in range(rounds):
            order.shuffle(few)
            end += few
        text += draw(st.sampled_from(["\n", " ", ". "])).join(end)
    if draw(st.booleans()):
        text += draw(st.sampled_from(LINES)) * draw(st.integers(0, 30))
    return text[:draw(st.integers(0, len(text)))] if draw(st.integers(0, 9)) == 0 else text


@st.composite
def examples(draw) -> Example:
    reasoning, answer = draw(texts()), draw(texts())
    prompt = draw(st.sampled_from(["", "What is 2+2?", reasoning[:200], answer[:300], " ".join(LINES[:6]),
                                   draw(texts(cycles=False))]))
    return Example(row=0, prompt=prompt, reasoning=reasoning, answer=answer)


@st.composite
def repetition_filters(draw) -> RepetitionFilter:
    """The build's thresholds, or random ones (a 0 switches a signal off), and small windows."""
    if draw(st.booleans()):
        return RepetitionFilter()
    pick = lambda *options: draw(st.sampled_from(options))  # noqa: E731
    return RepetitionFilter(
        tail_repeats=pick(0, 2.0, 3.0, 2.5), tail_chars=pick(1, 50, 200), cycle_repeats=pick(0, 2.0, 3.0),
        cycle_share=pick(0.5, 0.0, 0.9), run_copies=pick(0, 2, 4), paragraph_repeats=pick(0, 2, 3),
        sentence_repeats=pick(0, 2, 8), repeated_share=pick(0, 0.02, 0.08), ngram_dup_share=pick(0, 0.3, 0.9),
        ngram_top_share=pick(0, 0.05, 0.4), min_compression=pick(0, 0.12, 0.5), loop_window=pick(8000, 300, 57, 0),
        min_chars=pick(1000, 0, 100), window_chars=pick(2500, 301, 0), max_words=pick(200, 3, 11, 40),
        dup_ngram_gate=pick(0.35, 1.0, 0.0))


# -- the whole filter -------------------------------------------------------------------------------

@settings(max_examples=1500, deadline=None)
@given(examples(), repetition_filters())
def test_property_the_compiled_filter_decides_as_the_python_one(example, check):
    slow = dataclasses.replace(check, compiled=False)(example)
    fast = dataclasses.replace(check, compiled=True)(example)
    assert (fast.reason, fast.detail, fast.scores) == (slow.reason, slow.detail, slow.scores)
    assert [type(v) for v in fast.scores.values()] == [type(v) for v in slow.scores.values()]
    assert list(fast.scores) == list(slow.scores)


STOPWORD_LIKE = sorted(w.decode() for w in STOPWORDS) + ["doesn'tx", "shouldn't", "Doesn't", "DOESN'T", "would_",
                                                         "the1", "th", "a'", "it's.", "(they)", "l'été", "é"]


@settings(max_examples=100, deadline=None)
@given(st.lists(examples(), max_size=8), repetition_filters(), st.sampled_from([False, True, None]))
def test_property_a_batch_is_judged_as_its_examples_one_at_a_time(batch, check, compiled):
    check = dataclasses.replace(check, compiled=compiled)
    assert check.judge_batch(batch) == [dataclasses.replace(check, compiled=False)(e) for e in batch]


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=600) | texts() | st.lists(st.sampled_from(STOPWORD_LIKE), max_size=40).map(" ".join),
       st.text(alphabet="Th'e isn't ofAND_x1 ., \u00e9\u4e2d", max_size=200))
def test_property_the_compiled_english_score_is_the_python_one(text, more):
    for sample in (text, more, text + more):
        assert english_score(sample, compiled=True) == english_score(sample, compiled=False)
    example = Example(row=0, prompt=more, reasoning=text)
    assert EnglishFilter(compiled=True)(example) == EnglishFilter(compiled=False)(example)


def test_the_compiled_code_holds_the_python_constants():
    assert tuple(tables.SIZES) == repetition._SIZES
    assert bytes(np.flatnonzero(tables.PUNCTUATION).astype(np.uint8)) == bytes(sorted(b".,;:!?\"'()[]"))
    table = package.stopword_table(STOPWORDS)
    assert np.count_nonzero(table) == len(STOPWORDS)
    assert {int(v).to_bytes(8, "little").rstrip(b"\0") for v in table if v} == set(STOPWORDS)
    assert all(isinstance(getattr(RepetitionFilter(), name), (int, float)) for name in verdict.PARAMS)


# -- the steps --------------------------------------------------------------------------------------

@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"", b"a", b"ab", b"abcdefgh", b"abcdefghi", b"abcdefgh" * 2 + b"!",
                                 b"abcdefgh-X-stuvwxyz", b"abcdefgh-Y-stuvwxyz", b"abcdefgh-XX-stuvwxyz",
                                 b"\x00", b"\x00\x00", b"abcdefgh\x00stuvwxyz"]), max_size=80), st.integers(0, 7))
def test_property_interning_groups_equal_units_in_order_of_first_occurrence(units, offset):
    """Units that share a length and their first and last 8 bytes get one digest; only their bytes
    keep them apart. Every unit starts at every offset of an 8-byte word."""
    data = b"#" * offset + b"|".join(units)
    starts = np.array([offset + sum(len(u) + 1 for u in units[:k]) for k in range(len(units))], dtype=np.int64)
    stops = starts + np.array([len(u) for u in units], dtype=np.int64)
    group, first, count, groups, _ = tables._intern(array(data).view(np.uint64), starts, stops, len(units))
    order = list(dict.fromkeys(units))
    assert groups == len(order)
    assert [order[g] for g in group[:len(units)]] == units
    assert [units[first[g]] for g in range(groups)] == order
    assert list(count[:groups]) == [units.count(u) for u in order]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=40), st.data())
def test_property_equal_compares_every_byte_at_every_offset(a, b, data):
    buffer = a + b
    words = array(buffer).view(np.uint64)
    i = data.draw(st.integers(0, len(buffer)))
    j = data.draw(st.integers(0, len(buffer)))
    n = data.draw(st.integers(0, len(buffer) - max(i, j)))
    assert tables._equal(words, i, words, j, n) == (buffer[i:i + n] == buffer[j:j + n])


@settings(max_examples=800, deadline=None)
@given(texts())
def test_property_the_splits_are_the_bytes_methods(text):
    data = text.encode("utf-8", "surrogatepass")
    # lines: repetition._split on the cased text
    window = cased(text)
    raw0, raw1, start, stop, n = split._lines(array(window), len(window))
    raw, stripped = _split(window)
    assert [window[s:e] for s, e in zip(raw0, raw1)] == raw
    assert [window[s:e] for s, e in zip(start, stop)] == stripped and n == len(raw)
    # paragraphs and sentences: split(b"\n\n"), split(b". ") on the folded text
    low = folded(text)
    p0, p1, s0, s1 = split._parts(array(low), len(low))
    assert [low[s:e] for s, e in zip(p0, p1)] == low.split(b"\n\n")
    assert [low[s:e] for s, e in zip(s0, s1)] == low.split(b". ")
    # words, and the last ones
    starts, stops = split._words(array(data), 0, len(data))
    assert [data[s:e] for s, e in zip(starts, stops)] == data.split()
    for most in (1, 3, 200):
        starts, stops = split._last_words(array(data), 0, len(data), most)
        words = data.rsplit(None, most)
        assert [data[s:e] for s, e in zip(starts, stops)] == (words[1:] if len(words) > most else words)
    # folding
    buffer, m = tables._cased(data, 0, len(data))
    assert buffer[:m].tobytes() == cased(text) and not buffer[m:].any() and len(buffer) % 8 == 0
    out = np.zeros(len(data) + 16, dtype=np.uint8)
    end = tables._compact(buffer, m, out, 3)
    assert out[3:end].tobytes() == low
    buffer, m = tables._folded(data)
    assert buffer[:m].tobytes() == low and len(buffer) % 8 == 0 and len(buffer) >= m + 8


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(["ab", "a", "b", "abc", " ", "ba", "c", "\n", "abcdefgh"]), max_size=120)
       .map("".join), st.integers(0, 5))
def test_property_the_compiled_tail_is_repeating_tail(text, head):
    data = b"z" * head + text.encode()
    period, span, end = loops._tail(array(data), head, len(data))
    found = repeating_tail(data[head:])
    assert (period, span) == ((found.period, found.span) if found else (0, 0))
    assert end == head + len(data[head:].rstrip())


@settings(max_examples=800, deadline=None)
@given(st.lists(st.sampled_from(["alpha", "beta", "gamma,", "(delta)", "ATGCGTACGTTAGCC", "x=1;", "...", "the",
                                 "epsilonlongword", "zeta.", "elevenchars", "twelve-chars", "(twelvechars)"]),
                min_size=0, max_size=30), st.data())
def test_property_the_compiled_quote_check_is_quoted(words, data):
    prompt = " ".join(words).encode()
    unit_words = data.draw(st.lists(st.sampled_from(words + ["omega", "psi", "..."]) if words else
                                    st.sampled_from(["omega", "psi"]), max_size=12))
    unit = data.draw(st.sampled_from(["  ", " ", "\n"])).join(unit_words).encode()
    low = array(prompt)
    result, _, ready = quotes._is_quoted(array(unit), 0, len(unit), low, len(prompt),
                                           quotes._prompt_words(low, 0), 0)
    assert result == quoted(unit, prompt)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(["a", "bb", "ccc", "dd", "e", "ff"]), max_size=60),
       st.lists(st.sampled_from([" ", "\n", "  ", "\t"]), min_size=1), st.sampled_from([3, 4, 7, 200]))
def test_property_the_top_3gram_is_top_ngram_share(words, spaces, most):
    text = "".join(w + spaces[i % len(spaces)] for i, w in enumerate(words)).encode()
    kept = text.rsplit(None, most)
    kept = kept[1:] if len(kept) > most else kept
    n, total, top, chars = judge._top_gram(array(text), 0, len(text), most)
    assert (n, total) == (len(kept), sum(map(len, kept)))
    assert (min(1.0, top * chars / total) if n > 3 else 0.0) == top_ngram_share(kept)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["a", "bb", "ccc", "dd", "a"]), max_size=60), st.integers(0, 3))
def test_property_the_10gram_share_is_its_exact_definition(words, spaces):
    text = (" " * (spaces + 1)).join(words).encode()
    got = judge.dup_share(array(text), 0, len(text), 10 ** 6)
    assert got == (0.0 if len(words) <= 10 else dup_ngram_share([w.encode() for w in words]))
    grams = [tuple(words[i:i + 10]) for i in range(len(words) - 9)]
    covered = [False] * len(words)
    for i, gram in enumerate(grams):
        if grams.count(gram) > 1:
            covered[i:i + 10] = [True] * 10
    total = sum(map(len, words))
    assert got == (0.0 if len(words) <= 10 else sum(len(w) for w, c in zip(words, covered) if c) / total)


@settings(max_examples=600, deadline=None)
@given(texts(), texts(cycles=False), st.sampled_from([3.0, 2.0, 2.5]), st.sampled_from([0.5, 0.0, 0.9]),
       st.sampled_from([2.0, 4.0]), st.sampled_from([8000, 300, 40]))
def test_property_the_cycle_and_the_run_are_the_python_ones(text, prompt, repeats, share, copies, window):
    """On the cased end of a part, with the lines of a prompt that holds some of the text."""
    draw_prompt = prompt + text[: len(text) // 3]
    body = text.encode("utf-8", "surrogatepass")
    end = cased(text)[-window:]
    low_prompt = cased(draw_prompt)
    _, _, p_start, p_stop, _ = split._lines(array(low_prompt), len(low_prompt))
    (lines, distinct, chars, unit_start, unit_stop, found_copies, run_start, run_stop, begun, ended) = \
        loops._part_loops(array(cased(text)), len(body), window, repeats, share, copies, array(low_prompt),
                             len(low_prompt), p_start, p_stop)
    cycle = cycling_tail(end, repeats=repeats, share=share, prompt_lines=frozenset(_split(low_prompt)[1]))
    assert (lines, chars, end[unit_start:unit_stop]) == ((cycle.lines, cycle.span, cycle.unit) if cycle else
                                                        (0, 0, b""))
    assert cycle is None or lines / distinct == cycle.repeats
    run = copy_run(end, min_copies=int(copies), prompt=low_prompt)
    assert (found_copies, end[run_start:run_stop], begun, ended) == ((run.copies, run.unit, run.start, run.end)
                                                                     if run else (0, b"", 0, 0))


@settings(max_examples=300, deadline=None)
@given(st.integers(30, 80), st.lists(st.integers(-2, 2), min_size=1, max_size=8), st.integers(0, 3))
def test_property_a_run_s_gap_bound_is_the_python_one(length, deltas, spaces):
    """Copies whose gap is the run's bound, one byte under or one over: ``gap * length + slack``."""
    unit = ("the fraction is 144 over 132,600 " * 3)[:length - spaces] + " " * spaces
    parts = [unit]
    for delta in deltas:  # the next copy starts gap + 2 bytes (two newlines) after this one ends
        parts += ["y" * max(0, 2 * len(unit.strip()) + 100 - 2 + delta), unit]
    text = "\n".join(parts).encode()
    got = loops._part_loops(array(text), len(text), 8000, 3.0, 0.5, 2.0, array(b""), 0, np.zeros(0, np.int64),
                               np.zeros(0, np.int64))
    run = copy_run(text, min_copies=2)
    assert (got[5], text[got[6]:got[7]], got[8], got[9]) == ((run.copies, run.unit, run.start, run.end)
                                                            if run else (0, b"", 0, 0))


UNITS = [b"short", b"x" * 60, b"y" * 60, b"First we add the two numbers together and then we divide by three",
         b"Next we take the remainder and check it against the divisor again", b"z" * 120, b"w" * 120, b"",
         b"the quantity that it stands for, in a sentence long enough to count as one"]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(UNITS), max_size=40), st.sampled_from([b". ", b"\n\n"]), st.integers(0, 130),
       st.integers(1, 5), st.sampled_from([b"", b"short x", UNITS[3] + b" and more", b"zzzzzzzzzzzzz " * 3,
                                           UNITS[8] + b". " + UNITS[4]]))
def test_property_the_units_are_unit_stats(parts, separator, least, min_copies, prompt):
    """The most repeated unit's count and the widest covering unit, ties included (units of one
    length that repeat as often: the first seen wins), units the prompt holds passed over."""
    text = separator.join(parts)
    _, count, cover = _unit_stats(text, separator, least, min_copies, repetition.quoter(prompt))
    p0, p1, s0, s1 = split._parts(array(text), len(text))
    starts, stops = (p0, p1) if separator == b"\n\n" else (s0, s1)
    low = array(prompt)
    (got_count, copies, start, stop), _, _ = loops._units(array(text), starts, stops, least, float(min_copies),
                                                             low, len(prompt), quotes._prompt_words(low, 0), 0)
    assert (got_count, copies, text[start:stop]) == (count, cover.copies, cover.unit)


# -- the batches and the switch ---------------------------------------------------------------------

@dataclasses.dataclass
class Scripted:
    """A filter that drops the rows whose number a seed picks, and logs its calls."""

    name: str
    seed: int
    calls: list
    reason: str
    score_names: tuple = ()

    def __call__(self, example):
        self.calls.append((self.name, example.row))
        if random.Random(self.seed * 1000 + example.row).random() < 0.3:
            return Verdict(self.reason, f"row {example.row}", {self.name: example.row})
        return Verdict(scores={self.name: -example.row})


@dataclasses.dataclass
class ScriptedInBatches(Scripted):
    """The same, judging a batch at a time (as RepetitionFilter can)."""

    def judge_batch(self, examples):
        return [self(example) for example in examples]


@pytest.mark.parametrize("batch", [1, 2, 7, 64])
def test_batched_apply_filters_makes_the_calls_of_one_example_at_a_time(batch):
    def run(batched):
        calls = []
        filters = [Scripted("first", 1, calls, "non_english"), ScriptedInBatches("second", 2, calls, "loop"),
                   Scripted("third", 3, calls, "too_long")]
        rows = [Example(row=i, prompt="p") for i in range(100)]
        for example in rows[::9]:
            example.drop("duplicate", "dropped before")
        if batched:
            out = list(apply_filters(iter(rows), filters, batch=batch))
        else:  # the definition: each example through the filters, the first drop wins
            out = []
            for example in rows:
                if example.kept:
                    for check in filters:
                        verdict = check(example)
                        example.scores.update(verdict.scores)
                        if verdict.reason is not None:
                            example.drop(verdict.reason, verdict.detail)
                            break
                out.append(example)
        return [(e.row, e.status, e.detail, e.scores) for e in out], sorted(calls)
    assert run(True) == run(False)


def test_a_filter_switches_to_compiled_code_after_compile_from_rows(monkeypatch):
    """Where this machine has not built the compiled code's module: Python for the first rows."""
    monkeypatch.setattr(package, "ready", lambda: False)
    example = Example(row=0, prompt="What is 2+2?", reasoning="Let me think. " * 200, answer="4")
    used = []
    real = verdict.judge_batch
    monkeypatch.setattr(verdict, "judge_batch", lambda check, batch: used.append(len(batch)) or real(check, batch))
    check, other = RepetitionFilter(), RepetitionFilter()
    for _ in range(COMPILE_FROM + 3):
        check(example)
    assert used == [1, 1, 1]
    assert check.judge_batch([example] * 5) == [other(example)] * 5  # a filter counts its own rows
    assert used == [1, 1, 1, 5]
    assert not Switch()(None, 1) and Switch(0)(None, 1) and Switch(0)(False, 1) is False and Switch()(True, 1)
    assert RepetitionFilter(compiled=True) == RepetitionFilter(compiled=False) == RepetitionFilter()
    english = EnglishFilter()
    for _ in range(COMPILE_FROM):
        english(example)
    assert english._switch.left == 0 and EnglishFilter()._switch.left == COMPILE_FROM


@pytest.mark.parametrize("setting", [dict(min_chars=float("nan")), dict(window_chars=10**20),
                                     dict(window_chars=-10**20), dict(loop_window=10**20), dict(loop_window=-10**20),
                                     dict(max_words=-1),
                                     dict(max_words=2**53 + 1), dict(max_words=True), dict(tail_chars=10**400),
                                     dict(loop_window=100.5), dict(window_chars=float("nan"))])
def test_fields_the_compiled_judge_cannot_hold_are_judged_in_python(setting):
    """Values the API allows and the CLI does not reach: the compiled filter gives what the Python
    one gives (a verdict, or the same error)."""
    example = Example(row=0, prompt="x", reasoning="abc. " * 500, answer="abc. " * 10)
    outcomes = []
    for compiled in (False, True):
        check = dataclasses.replace(RepetitionFilter(), compiled=compiled, **setting)
        try:
            outcomes.append(check(example))
        except Exception as error:  # noqa: BLE001 (the Python definition's own error, whatever it is)
            outcomes.append(type(error))
    assert outcomes[0] == outcomes[1]
    assert not dataclasses.replace(RepetitionFilter(), **setting)._compilable
    assert RepetitionFilter()._compilable


@pytest.mark.parametrize("window", [-9000, -5000, -100, 0, 1, 100, 2500])
def test_windows_of_any_sign_are_judged_alike(window):
    """``text[-window:]`` with a window of 0 or below is the whole text or its end from ``-window``:
    the compiled judge slices as Python does (values the random settings above do not draw)."""
    texts = ["Let me check. " * 300 + "\n\nThe answer is 4.", "Wait, so x = 3.\nHmm.\n" * 120, "abc. " * 900]
    for text in texts:
        example = Example(row=0, prompt="What is x?", reasoning=text, answer=text[:700])
        check = RepetitionFilter(loop_window=window, window_chars=window, min_chars=0)
        assert check._compilable
        assert dataclasses.replace(check, compiled=True)(example) == dataclasses.replace(check, compiled=False)(example)


def test_a_filter_uses_compiled_code_from_its_first_row_where_the_module_is_built(monkeypatch):
    asked = []
    monkeypatch.setattr(package, "ready", lambda: asked.append(1) or True)
    example = Example(row=0, prompt="What is 2+2?", reasoning="Let me think. " * 200, answer="4")
    used = []
    real = verdict.judge_batch
    monkeypatch.setattr(verdict, "judge_batch", lambda check, batch: used.append(len(batch)) or real(check, batch))
    check = RepetitionFilter()
    for _ in range(3):
        check(example)
    assert used == [1, 1, 1] and asked == [1]  # asked once a filter
    assert not RepetitionFilter(compiled=False)._switch(False, 1)


# -- the extension module against numba's just-in-time code ---------------------------------------

@pytest.fixture(scope="module")
def both_kernels():
    """The native module's functions and numba's just-in-time ones (the module is built if need be:
    a test that cannot build it fails)."""
    return package.kernels(True), package.kernels(False)


@settings(max_examples=300, deadline=None)
@given(examples(), repetition_filters())
def test_property_the_module_computes_what_numbas_jit_does(both_kernels, example, check):
    module, jit = both_kernels
    params = np.array([float(getattr(check, name)) for name in verdict.PARAMS], dtype=np.float64)
    texts = [getattr(example, part).encode("utf-8", "surrogatepass") for part in ("reasoning", "answer", "prompt")]
    got, expected = module.judge(*texts, params), jit.judge(*texts, params)
    assert got[0].tobytes() == expected[0].tobytes() and got[1:] == expected[1:]
    assert [type(v) for v in got] == [type(v) for v in expected]
    both, length = got[0], got[1]
    for most in (0, 3, 11, 200):
        assert module.dup_share(both, 0, length, most) == jit.dup_share(both, 0, length, most)
    words_of, table = np.frombuffer(language_words(), dtype=np.uint8).copy(), package.stopword_table(STOPWORDS)
    assert module.english_counts(texts[0], words_of, table) == jit.english_counts(texts[0], words_of, table)


def language_words() -> bytes:
    from tzc_data.filters.language import _WORDS

    return _WORDS


def test_the_exported_types_are_what_numba_infers_for_what_the_filters_pass(both_kernels, no_native):
    """The module converts its arguments to the declared types without checking them: they must be
    exactly what numba's dispatcher types the filters' own arguments as."""
    example = Example(row=0, prompt="What is 2+2? Say it.", reasoning="Let me think. It is 4. " * 120,
                      answer="It is 4. " * 30)
    check = RepetitionFilter(dup_ngram_gate=1.0)  # dup_share is called too
    assert verdict.judge_batch(check, [example], use_native=False)
    english_score(example.reasoning, compiled=True)
    inferred = {name: getattr(module, name).nopython_signatures for name, module in
                (("judge", judge), ("dup_share", judge), ("english_counts", english))}
    for name, spec in package.SPECS.items():
        signature = native.numba_signature(spec)
        assert [(s.args, s.return_type) for s in inferred[name]] == [(signature.args, signature.return_type)], name


def test_without_a_module_the_filters_use_numbas_jit(no_native):
    found = package.kernels()
    assert found.judge is judge.judge and found.english_counts is english.english_counts
    assert not package.ready()
    with pytest.raises(RuntimeError, match="the native module tzc_filters could not be built"):
        package.kernels(True)


def test_a_process_tries_to_build_the_module_once(monkeypatch):
    from tzc_data.filters import language

    tries = []
    monkeypatch.setattr(native, "load", lambda *_: None)
    monkeypatch.setattr(native, "build", lambda *_: tries.append(1))
    package._kernels.cache_clear()
    language._compiled.cache_clear()
    try:
        assert package.kernels() is package.kernels(None)
        english_score("The cat sat on the mat.", compiled=True)
        RepetitionFilter(compiled=True)(Example(row=0, prompt="x", reasoning="abc. " * 300, answer="abc"))
        assert tries == [1]
    finally:
        package._kernels.cache_clear()
        language._compiled.cache_clear()
