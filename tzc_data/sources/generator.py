"""A deterministic source of GlaiveAI-like rows with planted defects.

Row ``i`` is a pure function of ``(seed, i)``: any range is defined and cheap to reach, two builds
of the same range see the same bytes, and tests can ask which defect was planted in a row
(:func:`planted`) to measure a filter's precision and recall.

Lengths follow the real dataset (response characters on rows 0:280000: p5 ≈ 4.9k, p50 ≈ 7.1k,
p95 ≈ 10.4k, p99 ≈ 16k): a log-normal body (median 6.9k characters asked, sigma 0.215) plus a 3% heavier tail.
Prose is assembled from sentence templates with numbers and names drawn per row, so texts are
long, varied and tokenise like English reasoning, and generating a row costs far less than
tokenising it.

Planted defects and their rates (per row) are in :data:`DEFECT_RATES`. The generator as a build's
source is :class:`tzc_data.sources.synthetic.SyntheticSource`; this module imports nothing of ``sources``.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

# defect -> share of rows. Everything else is "clean".
DEFECT_RATES: dict[str, float] = {
    "duplicate": 0.020,             # the exact prompt of an earlier row
    "duplicate_normalised": 0.010,  # an earlier prompt with other case / spacing / NFKC forms
    "near_duplicate": 0.015,        # an earlier prompt with one word changed, added, dropped or moved
    "loop_unterminated": 0.012,     # a repeating tail that never reaches </think>
    "loop_reasoning": 0.008,        # a repeating tail, then </think> and a short answer
    "loop_answer": 0.003,           # the answer ends in a repeated unit
    "loop_paragraphs": 0.004,       # one paragraph pasted 4-6 times throughout the reasoning
    "unterminated": 0.010,          # cut mid-sentence without a loop, no </think>
    "empty_answer": 0.005,
    "empty_reasoning": 0.002,
    "tag_in_content": 0.004,        # e.g. a literal "</answer>" inside the reasoning
    "control_in_content": 0.003,    # e.g. "<end_of_turn>" inside the prompt
    "non_english": 0.020,
    "over_length": 0.010,           # a response of 20k-40k characters
}
_CUMULATIVE = tuple(zip(itertools.accumulate(DEFECT_RATES.values()), DEFECT_RATES))  # (bound, defect), rising

NAMES = ["Alice", "Bob", "Carmen", "Deepak", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kofi", "Lena"]
THINGS = ["apples", "marbles", "books", "tickets", "coins", "pencils", "boxes", "cookies", "stamps", "cards"]
PLACES = ["Lisbon", "Osaka", "Nairobi", "Denver", "Lyon", "Quito", "Perth", "Oslo", "Pune", "Austin"]
TOPICS = [
    "photosynthesis", "compound interest", "the Pythagorean theorem", "binary search", "supply and demand",
    "plate tectonics", "the French Revolution", "prime factorisation", "Newton's second law", "recursion",
    "the water cycle", "probability of independent events", "hash tables", "the causes of inflation",
]
PROMPTS = [
    "{n1} has {a} {t1}. {n2} gives {n1} {b} more, and then {n1} shares them equally among {c} friends. "
    "How many {t1} does each friend get, and how many are left over? Explain each step of your reasoning.",
    "A train leaves {p1} at {h}:00 travelling at {v} km/h. Another train leaves {p2} one hour later at {w} km/h "
    "on the same line towards {p1}. If the cities are {d} km apart, when and where do the trains meet?",
    "Explain {topic} to a high-school student, then give one worked example that uses the numbers {a} and {b} "
    "and point out the most common misconception students have about it.",
    "What is the sum of all integers between {a} and {d} that are divisible by {c}? Show how you would check "
    "the result without adding every number by hand.",
    "A rectangle has a perimeter of {d} cm and its length is {c} cm more than its width. What are its "
    "dimensions and its area? Please verify the answer at the end.",
    "{n1} invests {d} dollars at {c} percent interest compounded yearly. How much will the investment be "
    "worth after {b} years, and how does that compare with simple interest over the same period?",
    "Write a function that returns the {c}th Fibonacci number and explain its time complexity. Then discuss "
    "how memoisation changes the complexity and why it matters for inputs such as {d} or {a}{b}.",
    "In a class of {d} students, {a} play football, {b} play chess and {c} play both. How many students play "
    "neither game? Describe the reasoning with a Venn diagram in words.",
    "{n1} rolls a fair die {c} times while {n2} flips a coin {b} times. What is the probability that {n1} "
    "gets at least one six, and how does it compare with exactly one six? Explain the difference intuitively.",
    "Why does {topic} matter in everyday life? Give two examples from {p1} or {p2}, one involving about {d} "
    "people and one involving {b}, and explain the underlying idea carefully before you conclude.",
]
REASONING = [
    "Okay, so I need to figure out {q}.", "Let me start by writing down what I know.",
    "First, {n1} has {a} {t1}, which is the starting amount.", "So {a} plus {b} gives {s}.",
    "Wait, maybe I should double-check that addition.", "Let me recount: {a} and {b} together make {s}.",
    "Hmm, that seems right, but let me think about it differently.", "If I divide {s} by {c}, I get {qq} with "
    "a remainder of {r}.", "So each part is {qq}, and {r} are left over.", "Let me verify: {qq} times {c} is "
    "{qc}, plus {r} is {s}, which matches.", "Another way to see this is to think about {topic}.",
    "I remember that {topic} is usually explained with a simple example.", "But wait, the question asks "
    "for something slightly different.", "Let me reconsider the units here, kilometres versus metres.",
    "The distance is {d}, so the time would be {d} divided by the combined speed {vw}.",
    "That gives roughly {ratio} hours, which seems reasonable.", "I think I might have made a mistake earlier.",
    "No, actually the earlier step was fine; the confusion came from the wording.", "So the key idea is that "
    "the total stays the same while it is split into equal groups.", "Let me make sure I am not missing any "
    "edge cases, like when the remainder is zero.", "Alternatively, I could set up an equation with x as the "
    "unknown.", "Let x be the width; then the length is x plus {c}.", "Twice the sum of x and x plus {c} is "
    "{d}, so 4x plus {c2} equals {d}.", "Solving, 4x equals {dc}, so x is {x4}.", "Okay, that makes sense now.",
    "I should also explain why this works, not just compute it.", "Let me summarise the steps before writing "
    "the answer.",
]
ANSWER = [
    "**Step 1:** Start with {a} {t1} and add {b}, giving {s}.", "**Step 2:** Divide {s} by {c}: each "
    "friend gets {qq}, with {r} left over.", "**Check:** {qq} × {c} + {r} = {s}.", "The key idea is {topic}, "
    "applied carefully to the numbers given.", "**Answer:** each share is {qq}, and {r} remain.",
    "In short, setting up the equation and checking the result against the original conditions confirms "
    "the solution.", "This matches the intuition from the worked example above.",
    "**Why it works:** splitting {s} into {c} equal groups is exactly what division by {c} means.",
    "A quick estimate agrees: {s} is a little more than {qc}, so {qq} per group is plausible.",
    "**Common mistake:** forgetting the remainder of {r} and reporting {qq} as if nothing were left.",
    "Expressed as a mixed number, each share is {qq} and {r}/{c}.", "If {n1} had {b} fewer {t1}, the "
    "total would be {a} instead.", "The same method works for any total and any number of groups.",
    "**Summary:** add first, then divide, then check by multiplying back.", "Units matter: the result "
    "counts {t1}, not groups.", "For the related question about {topic}, the same care with the numbers "
    "applies.",
]
LOOP_UNITS = [
    "Wait, let me check that again.", "So the answer is {qq}.", "Let me recompute {a} plus {b}.",
    "Hmm, I think I need to re-examine the problem statement.", "Therefore, {s} divided by {c} is {qq}.",
]
FOREIGN = [
    "Bueno, primero necesito entender el problema y luego calcular el resultado paso a paso.",
    "Entonces, si sumamos {a} y {b} obtenemos {s}, y luego dividimos entre {c}.",
    "Also, zuerst muss ich die Aufgabe genau lesen und dann die Zahlen addieren.",
    "Wenn wir {s} durch {c} teilen, erhalten wir {qq} mit einem Rest von {r}.",
    "Alors, je dois d'abord comprendre la question avant de faire le calcul.",
    "Donc la réponse finale est {qq}, et il reste {r} objets.",
]
FOREIGN_PROMPTS = [
    "{n1} tiene {a} manzanas y le regalan {b} más. Si reparte todas entre {c} amigos, ¿cuántas recibe cada "
    "uno y cuántas sobran? Explica tu razonamiento paso a paso con detalle.",
    "{n1} hat {a} Äpfel und bekommt {b} dazu. Wenn sie alle gleichmäßig an {c} Freunde verteilt, wie viele "
    "bekommt jeder und wie viele bleiben übrig? Erkläre jeden Schritt.",
]


@dataclass(frozen=True)
class SyntheticRow:
    prompt: str
    response: str
    defect: str  # "clean" or a key of DEFECT_RATES
    shape: str = ""  # for loops: how the text repeats (see LOOP_SHAPES)


def _slots(rng: random.Random) -> dict[str, Any]:
    a, b, c = rng.randint(12, 480), rng.randint(5, 250), rng.randint(3, 12)
    s = a + b
    d = rng.randint(100, 900)
    v, w = rng.randint(40, 160), rng.randint(40, 160)
    return {
        "n1": rng.choice(NAMES), "n2": rng.choice(NAMES), "t1": rng.choice(THINGS), "p1": rng.choice(PLACES),
        "p2": rng.choice(PLACES), "topic": rng.choice(TOPICS), "a": a, "b": b, "c": c, "s": s, "d": d,
        "h": rng.randint(5, 11), "v": v, "w": w, "vw": v + w, "qq": s // c, "r": s % c, "qc": (s // c) * c,
        "ratio": round(d / (v + w), 2), "c2": 2 * c, "dc": d - 2 * c, "x4": round((d - 2 * c) / 4, 2),
        "q": "how the numbers in this problem fit together",
    }


def _response_chars(rng: random.Random) -> int:
    if rng.random() < 0.03:
        return int(13500 * math.exp(rng.gauss(0, 0.25)))
    return int(6900 * math.exp(rng.gauss(0, 0.215)))


OPENERS = ["", "", "", "", "So ", "Wait, ", "Hmm, ", "Okay, ", "Now, ", "Actually, ", "Right, ", "Then ",
           "Also, ", "Let me see: ", "Alternatively, ", "But ", "Still, ", "In that case, "]
CLOSERS = ["", "", "", "", " I think.", " That seems right.", " Let me keep going.", " Good.", " Hmm.",
           " I should be careful here.", " That part is clear."]


def _prose(rng: random.Random, pool: list[str], slots: dict[str, Any], chars: int, paragraph: int = 5) -> str:
    """Sentences from ``pool`` with an opener and a closer each, so that a clean text rarely says
    the same sentence twice (as real traces rarely do), in paragraphs of ``paragraph`` sentences.

    Written for speed (it is the synthetic source's whole cost): templates are drawn by index with
    ``random()`` (several times cheaper than ``rng.choice``), each is formatted once per text, and
    the last four picks are four locals, so that no template comes twice within four picks."""
    n, english = len(pool), pool is not FOREIGN  # the openers and closers are English
    n_open, n_close = len(OPENERS), len(CLOSERS)
    draw = rng.random
    filled: list[tuple[str, str] | None] = [None] * n  # (sentence, its form after an opener)
    parts: list[str] = []
    append = parts.append
    r1 = r2 = r3 = r4 = -1
    size = 0
    while size < chars:
        k = int(draw() * n)
        while k == r1 or k == r2 or k == r3 or k == r4:
            k = int(draw() * n)
        r1, r2, r3, r4 = r2, r3, r4, k
        forms = filled[k]
        if forms is None:
            sentence = pool[k].format(**slots)
            forms = filled[k] = (sentence, sentence if sentence.startswith("I ") else sentence[0].lower() + sentence[1:])
        if english:
            opener = OPENERS[int(draw() * n_open)]
            sentence = (opener + forms[1] if opener else forms[0]) + CLOSERS[int(draw() * n_close)]
        else:
            sentence = forms[0]
        append(sentence)
        size += len(sentence) + 1
        if len(parts) % paragraph == 0:
            append("\n\n")
    return " ".join(parts).replace(" \n\n ", "\n\n").strip()


INTROS = [
    "I am revising {topic} for an exam in {p2} next week.", "My friend {n2} gave me this puzzle over lunch.",
    "This came up while tutoring a student who loves {t1}.", "Our study group in {p1} disagreed about this one.",
    "I found this in an old workbook about {topic}.", "A colleague at the {p2} office sent me this question.",
    "I keep getting a different answer from my teacher here.", "This is from a practice sheet on {topic}.",
    "My daughter brought this home from school today.", "I saw this question on a forum and got curious.",
    "We are preparing a quiz for the {p1} maths club.", "I tried this twice and I am still unsure.",
    "{n1} and I made a bet about the answer.", "This is for a lesson plan I am writing on {topic}.",
    "I am a nurse in {p1} and numbers are not my strength.", "Quick question before my shift ends.",
    "I want to understand this properly, not just memorise it.", "This showed up in a job interview in {p2}.",
    "Can you help me with my homework?", "I am teaching myself {topic} from videos.",
]
ASKS = [
    "Please show every step.", "Explain it as you would to a curious ten-year-old.", "Keep the final answer short.",
    "A table would help if it fits.", "Point out where people usually go wrong.", "Check the answer at the end.",
    "Say which assumptions you make.", "Give an estimate first, then the exact value.",
    "Use plain words rather than jargon.", "Mention a second way to solve it.", "Tell me how confident you are.",
    "Round the result sensibly.", "Draw a small diagram in words.", "Avoid using a calculator.",
    "Write the reasoning as numbered steps.", "Relate it to everyday life.", "Be brief but complete.",
    "List the formulas you use.", "Explain why the method works.", "Double-check the arithmetic.",
]
_FILLER = ["really", "exactly", "then", "also", "now", "please", "quickly", "carefully"]


def _prompt(seed: int, i: int) -> str:
    """Row i's own prompt, before any duplicate is planted over it: an intro, a question and a
    request, each drawn with its own numbers and names, so that two distinct prompts share few
    word 3-shingles (as distinct GlaiveAI prompts do) even when they share a template."""
    rng = random.Random((seed << 72) | (1 << 70) | i)
    slots = _slots(rng)
    intro = rng.choice(INTROS).format(**slots)
    question = rng.choice(PROMPTS).format(**slots)
    first, second = rng.sample(ASKS, 2)
    return f"{intro} {question} {first} {second}"


def _kind(rng: random.Random) -> str:
    u = rng.random()
    for bound, name in _CUMULATIVE:
        if u < bound:
            return name
    return "clean"


def _twin_index(seed: int, i: int, rng: random.Random) -> int | None:
    """An earlier row whose prompt this row repeats: a row with its own, unaltered prompt."""
    if i == 0:
        return None
    for _ in range(8):
        j = i - 1 - rng.randrange(min(i, 5000))
        if _kind(random.Random((seed << 72) | j)) not in _PROMPT_DEFECTS:
            return j
    return None


_PROMPT_DEFECTS = {"duplicate", "duplicate_normalised", "near_duplicate", "control_in_content", "non_english"}


def _normalised_variant(text: str, rng: random.Random) -> str:
    choice = rng.randrange(3)
    if choice == 0:
        return text.upper()
    if choice == 1:
        return "  " + text.replace(" ", "   ").replace(".", ".\n") + " "
    return text.replace("A", "Ａ").replace("e", "ｅ")  # full-width forms: equal after NFKC


def _near_variant(text: str, rng: random.Random) -> str:
    """A near-duplicate: one edit (a word replaced, inserted or dropped, two words swapped, or the
    punctuation changed), plus changes of case and spacing that normalisation folds anyway."""
    words = text.split()
    edit = rng.randrange(5)
    k = rng.randrange(1, len(words) - 1)
    if edit == 0:
        words[k] = rng.choice(_FILLER)
    elif edit == 1:
        words.insert(k, rng.choice(_FILLER))
    elif edit == 2:
        del words[k]
    elif edit == 3:
        words[k], words[k + 1] = words[k + 1], words[k]
    else:
        words = [w.rstrip(".,?!") for w in words]
    text = " ".join(words)
    return text.lower() if rng.random() < 0.3 else text.replace(" ", "  ") if rng.random() < 0.3 else text


LOOP_SHAPES = ("sentence", "paragraph", "counter", "cycle")


def _loop(rng: random.Random, slots: dict[str, Any], chars: int, shape: str) -> str:
    """A repeating text of about ``chars`` characters (at least 8 units) in one of LOOP_SHAPES:
    one sentence; one paragraph of 300-1,500 characters; a sentence whose numbers count up
    ("Attempt 7: ... 12 ..."); or two paragraphs in alternation whose numbers change."""
    if shape == "sentence":
        unit = rng.choice(LOOP_UNITS).format(**slots) + " "
        return unit * max(8, chars // len(unit) + 1)
    if shape == "paragraph":
        unit = _prose(rng, REASONING, slots, rng.randint(300, 1500)) + "\n\n"
        return unit * max(8, chars // len(unit) + 1)
    if shape == "counter":
        unit = rng.choice(LOOP_UNITS)
        copies, k, size = [], 0, 0
        while size < chars or k < 8:
            text = f"Attempt {k + 1}: " + unit.format(**{**slots, "a": slots["a"] + k, "qq": slots["qq"] + k})
            copies.append(text)
            size += len(text) + 1
            k += 1
        return " ".join(copies)
    first = _prose(rng, REASONING, slots, rng.randint(150, 600))
    second = _prose(rng, REASONING, slots, rng.randint(150, 600))
    copies, k, size = [], 0, 0
    while size < chars or k < 8:
        text = (first if k % 2 == 0 else second).replace(str(slots["s"]), str(slots["s"] + k // 2))
        copies.append(text)
        size += len(text) + 2
        k += 1
    return "\n\n".join(copies)


def _repeated_paragraphs(rng: random.Random, reasoning: str, slots: dict[str, Any]) -> str:
    """The same paragraph pasted 4-6 times at places throughout an otherwise normal reasoning."""
    paragraph = _prose(rng, REASONING, slots, rng.randint(200, 700))
    pieces = reasoning.split("\n\n")
    for _ in range(rng.randint(4, 6)):
        pieces.insert(rng.randint(0, len(pieces)), paragraph)
    return "\n\n".join(pieces)


def generate(seed: int, i: int) -> SyntheticRow:
    """Row ``i`` of the synthetic dataset for ``seed``."""
    rng = random.Random((seed << 72) | i)
    kind = _kind(rng)
    shape = ""
    slots = _slots(rng)
    prompt = _prompt(seed, i)
    total = _response_chars(rng)
    if kind == "over_length":
        total = rng.randint(20000, 40000)
    answer_chars = max(200, int(total * rng.uniform(0.12, 0.25)))
    reasoning_pool, answer_pool = REASONING, ANSWER
    if kind == "non_english":
        prompt = rng.choice(FOREIGN_PROMPTS).format(**slots)
        reasoning_pool = answer_pool = FOREIGN
    reasoning = _prose(rng, reasoning_pool, slots, total - answer_chars)
    answer = _prose(rng, answer_pool, slots, answer_chars, paragraph=2)

    if kind in ("duplicate", "duplicate_normalised", "near_duplicate"):
        twin = _twin_index(seed, i, rng)
        if twin is not None:
            original = _prompt(seed, twin)
            prompt = {"duplicate": original, "duplicate_normalised": _normalised_variant(original, rng),
                      "near_duplicate": _near_variant(original, rng)}[kind]
        else:
            kind = "clean"
    elif kind == "loop_unterminated":
        head = reasoning[: rng.randint(500, 3000)]
        shape = rng.choice(LOOP_SHAPES)
        return SyntheticRow(prompt, f"<think>\n{head} {_loop(rng, slots, total, shape)}", kind, shape)
    elif kind == "loop_reasoning":
        shape = rng.choice(LOOP_SHAPES)
        reasoning = reasoning[: rng.randint(500, 3000)] + " " + _loop(rng, slots, rng.randint(1500, 4000), shape)
    elif kind == "loop_answer":
        shape = rng.choice(LOOP_SHAPES)
        answer = answer[:300] + " " + _loop(rng, slots, rng.randint(1500, 3000), shape)
    elif kind == "loop_paragraphs":
        shape = "repeated_paragraphs"
        reasoning = _repeated_paragraphs(rng, reasoning, slots)
    elif kind == "unterminated":
        cut = rng.randint(len(reasoning) // 2, len(reasoning))
        return SyntheticRow(prompt, f"<think>\n{reasoning[:cut]}", kind)
    elif kind == "empty_answer":
        answer = rng.choice(["", " ", "\n\n"])
    elif kind == "empty_reasoning":
        reasoning = rng.choice(["", "\n"])
    elif kind == "tag_in_content":
        tag = rng.choice(["</answer>", "<reasoning>", "</think>", "<answer>"])
        cut = rng.randrange(len(reasoning))
        reasoning = f"{reasoning[:cut]} {tag} {reasoning[cut:]}"
    elif kind == "control_in_content":
        prompt = f"{prompt} {rng.choice(['<end_of_turn>', '<start_of_turn>model', '<eos>', '<bos>'])}"
    return SyntheticRow(prompt, f"<think>\n{reasoning}\n</think>\n\n{answer}", kind, shape)


def planted(seed: int, i: int) -> str:
    """The defect planted in row ``i`` ("clean" for none)."""
    return generate(seed, i).defect
