"""``--format``: how a dataset's columns become one example's prompt and response.

Every format ends in GlaiveAI's layout, a prompt and a response ``<think>reasoning</think>answer``,
so that every later stage (the split on ``</think>``, the filters, the template) is the same for every
dataset and a build of GlaiveAI is byte for byte what it was before formats existed:

- ``glaive`` (default): ``prompt``, ``response`` (``<think>…</think>answer``).
- ``openo1``: ``instruction``, ``output`` (``<Thought>…</Thought><Output>…</Output>``, OpenO1-SFT).
- ``cot-collection``: ``source`` (prompt), ``rationale`` (reasoning), ``target`` (answer).
- ``messages``: a chat list in ``messages`` or ``conversations``, turns with ``role``/``content`` or
  ``from``/``value``; system turns are skipped (the build renders its own ``--system``); then one user
  turn and one assistant turn, whose content is split on ``</think>`` as GlaiveAI's response is.
- ``columns:prompt=COL,response=COL`` or ``columns:prompt=COL,reasoning=COL,answer=COL``: any other
  dataset.

A Parquet file that lacks a column the format reads, or holds it with a type that is no text (no
list of turns for ``messages``), is refused with a one-line :class:`SourceError` naming the file, the
column and the format, before a row is read. JSONL has no schema: a row without a field, or with a
field of the wrong type, is ``malformed``, its detail naming the field and the format. A row that
does not fit its format (an OpenO1 output without ``<Thought>``, a conversation of two user turns) is
dropped with reason ``format_mismatch``; one whose reasoning never ends, with ``unterminated_think``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from tzc_data.errors import ConfigError, SourceError
from tzc_data.record import Example
from tzc_data.sources.base import field_text, malformed

GLAIVE = "glaive"
FORMATS = ("glaive", "openo1", "cot-collection", "messages", "columns:prompt=COL,response=COL",
           "columns:prompt=COL,reasoning=COL,answer=COL")
_ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
          "model": "assistant"}


@dataclass(frozen=True)
class Format:
    """A parsed ``--format``: ``layout`` is how its columns make a response (``response``: prompt and
    response columns; ``parts``: prompt, reasoning and answer columns; ``openo1``; ``messages``)."""

    name: str
    layout: str
    columns: tuple[str, ...]

    @property
    def suffix(self) -> str:
        """What a malformed row's detail adds: nothing for the default, whose details predate formats."""
        return "" if self.name == GLAIVE else f" (--format {self.name})"

    def columns_of(self, names: list[str], file: str) -> tuple[str, ...]:
        """The columns to read from a file with columns ``names``, or SourceError naming what is missing."""
        if self.layout == "messages":
            found = [c for c in self.columns if c in names]
            if not found:
                raise SourceError(f"{file} has no column 'messages' or 'conversations' (--format messages); it has "
                                  f"{_listed(names)}")
            return (found[0],)
        for column in self.columns:
            if column not in names:
                raise SourceError(f"{file} has no column {column!r} (--format {self.name} reads "
                                  f"{', '.join(self.columns)}); it has {_listed(names)}")
        return self.columns

    def check_types(self, schema: pa.Schema, columns: tuple[str, ...], file: str) -> None:
        """SourceError for a column whose Parquet type the format cannot read."""
        for column in columns:
            if schema.get_field_index(column) < 0:  # two of one name: the rows say so (malformed)
                continue
            kind = schema.field(column).type
            fits = _is_turns(kind) if self.layout == "messages" else _is_text(kind)
            if not fits:
                wanted = "a list of turns" if self.layout == "messages" else "text"
                raise SourceError(f"{file} column {column!r} is {kind}, not {wanted} (--format {self.name})")

    def example(self, row: int, obj: Any, where: str) -> Example:
        """One decoded record (a JSONL object, or a Parquet row's columns by name) as an Example."""
        if not isinstance(obj, dict):
            return _in(where, malformed(row, f"record is a {type(obj).__name__}, not an object"))
        if self.layout == "messages":
            return _in(where, self._from_turns(row, obj))
        columns = self.columns
        texts = []
        for column in columns:
            value, problem = field_text(obj, column)
            if problem:
                return _in(where, malformed(row, problem + self.suffix))
            texts.append(value)
        if self.layout == "response":
            return Example(row=row, prompt=texts[0], response=texts[1])
        if self.layout == "parts":
            return _in(where, _think_in_reasoning(row, texts[1], f"field {columns[1]!r}", self.suffix)
                       or Example(row=row, prompt=texts[0], response=f"<think>{texts[1]}</think>{texts[2]}"))
        return _in(where, _openo1(row, texts[0], texts[1]))

    def _from_turns(self, row: int, obj: dict[str, Any]) -> Example:
        column = next((c for c in self.columns if c in obj), None)
        if column is None:
            return malformed(row, "missing field 'messages' or 'conversations' (--format messages)")
        turns = obj[column]
        if not isinstance(turns, list):
            return malformed(row, f"field {column!r} is {type(turns).__name__}, not a list of turns (--format messages)")
        said = []
        for n, turn in enumerate(turns):
            if not isinstance(turn, dict):
                return malformed(row, f"{column}[{n}] is {type(turn).__name__}, not a turn (--format messages)")
            role_key, text_key = ("role", "content") if "role" in turn else ("from", "value")
            role, problem = field_text(turn, role_key)
            text, text_problem = field_text(turn, text_key)
            if problem or text_problem:
                return malformed(row, f"{column}[{n}]: {problem or text_problem} (--format messages)")
            if role.lower() not in _ROLES:
                return malformed(row, f"{column}[{n}] has role {role!r}, not one of {', '.join(_ROLES)} "
                                      "(--format messages)")
            said.append((_ROLES[role.lower()], text))
        chat = [(role, text) for role, text in said if role != "system"]
        if [role for role, _ in chat] != ["user", "assistant"]:
            shape = ", ".join(role for role, _ in said) or "no turns"
            return _mismatch(row, f"turns are {shape}: only one user turn then one assistant turn fit")
        return Example(row=row, prompt=chat[0][1], response=chat[1][1])


def _openo1(row: int, instruction: str, output: str) -> Example:
    """``<Thought>reasoning</Thought>`` then the answer, in ``<Output>…</Output>`` or bare."""
    text = output.strip()
    if not text.startswith("<Thought>"):
        return _mismatch(row, "output does not begin with <Thought>")
    close = text.find("</Thought>")
    if close < 0:
        example = Example(row=row)
        example.drop("unterminated_think", f"no </Thought> in {len(output):,} characters")
        return example
    reasoning, answer = text[len("<Thought>"):close], text[close + len("</Thought>"):].strip()
    if answer.startswith("<Output>"):
        end = answer.rfind("</Output>")
        if end < 0:
            return _mismatch(row, "<Output> is never closed")
        if answer[end + len("</Output>"):].strip():
            return _mismatch(row, "text after </Output>")
        answer = answer[len("<Output>"):end]
    for part, content in (("thought", reasoning), ("answer", answer)):
        for tag in _OPENO1_TAGS:
            if tag in content:
                return _mismatch(row, f"the {part} contains {tag} at character {content.index(tag)}")
    return (_think_in_reasoning(row, reasoning, "the thought", " (--format openo1)")
            or Example(row=row, prompt=instruction, response=f"<think>{reasoning}</think>{answer}"))


_OPENO1_TAGS = ("<Thought>", "</Thought>", "<Output>", "</Output>")


def _think_in_reasoning(row: int, reasoning: str, field: str, suffix: str = "") -> Example | None:
    """A reasoning that holds ``</think>`` dropped as ``tag_in_content``, named as the reasoning:
    inside the ``<think>…</think>`` response that a format makes, the split would end the
    reasoning there and report the rest as the answer's markup."""
    at = reasoning.find("</think>")
    if at < 0:
        return None
    example = Example(row=row)
    example.drop("tag_in_content", f"{field} contains '</think>' at character {at}{suffix}")
    return example


def _mismatch(row: int, detail: str) -> Example:
    example = Example(row=row)
    example.drop("format_mismatch", detail)
    return example


def _in(where: str, example: Example) -> Example:
    if not example.kept:
        example.detail = f"{where}: {example.detail}"
    return example


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):  # pandas' categoricals, or a writer that kept Arrow's dictionary type
        return _is_text(kind.value_type)
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind) or pa.types.is_null(kind) or str(kind) in ("string_view", "binary_view"))


def _is_turns(kind: pa.DataType) -> bool:
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and pa.types.is_struct(kind.value_type)


def _listed(names: list[str]) -> str:
    return ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "") if names else "none"


_COLUMNS = re.compile(r"columns:(.+)")


def parse_format(spec: str) -> Format:
    """The :class:`Format` of a ``--format`` value, or ConfigError saying which values there are."""
    builtin = {
        "glaive": ("response", ("prompt", "response")),
        "openo1": ("openo1", ("instruction", "output")),
        "cot-collection": ("parts", ("source", "rationale", "target")),
        "messages": ("messages", ("messages", "conversations")),
    }
    if spec in builtin:
        layout, columns = builtin[spec]
        return Format(name=spec, layout=layout, columns=columns)
    match = _COLUMNS.fullmatch(spec)
    if match:
        pairs = [item.split("=", 1) for item in match.group(1).split(",")]
        named = dict((k.strip(), v.strip()) for k, v in (p for p in pairs if len(p) == 2))
        if len(named) == len(pairs) and all(named.values()):
            for roles, layout in ((("prompt", "response"), "response"), (("prompt", "reasoning", "answer"), "parts")):
                if sorted(named) == sorted(roles):
                    return Format(name=spec, layout=layout, columns=tuple(named[r] for r in roles))
    raise ConfigError(f"--format {spec!r} is not a format; formats are: {', '.join(FORMATS)}")
