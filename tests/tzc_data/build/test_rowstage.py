"""The per-row stages' choices that do not change what a build keeps."""

from __future__ import annotations

from tzc_data.build import rowstage
from tzc_data.build.config import BuildConfig
from tzc_data.build.rowstage import COMPILED_FROM_ROWS, build_filters


def compiled_choices(**options) -> set:
    config = BuildConfig(out="x", start=0, source="synthetic", **options)
    return {f.compiled for f in build_filters(config) if hasattr(f, "compiled")}


def test_the_quality_filters_may_compile_only_where_a_process_expects_thousands_of_rows(monkeypatch):
    """Where this machine has not built the compiled code's module (building it takes seconds)."""
    monkeypatch.setattr(rowstage, "ready", lambda: False)
    assert compiled_choices(stop=COMPILED_FROM_ROWS - 1) == {False}  # compiling would cost more than it saves
    assert compiled_choices(stop=COMPILED_FROM_ROWS) == {None}  # compiled after the first few hundred rows
    assert compiled_choices(stop=COMPILED_FROM_ROWS, engine="processes", workers=2) == {False}  # per process
    assert compiled_choices(stop=2 * COMPILED_FROM_ROWS, engine="processes", workers=2) == {None}
    assert compiled_choices(stop=1, language_filter=False, loop_filter=False) == set()


def test_every_build_uses_the_compiled_filters_where_their_module_is_built(monkeypatch):
    monkeypatch.setattr(rowstage, "ready", lambda: True)
    assert compiled_choices(stop=1) == {True}  # loaded in a millisecond: from the first row
    assert compiled_choices(stop=COMPILED_FROM_ROWS) == {None}  # the filters ask again (Switch)
