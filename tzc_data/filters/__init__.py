"""Quality filters. Each filter looks at one example and returns a :class:`Verdict`: keep, or drop
with a reason and a detail that shows what triggered it, plus named scores for the stats.

A filter is any object with ``name``, ``score_names`` and ``__call__(example) -> Verdict``
(:mod:`tzc_data.filters.base`); :func:`apply_filters` runs a list of them (first drop wins, every
score is recorded). One module per kind: ``repetition`` (loops), ``language``, ``length``; the
repetition signals and the English score also run compiled (the ``compiled`` package, numba:
imported only once a filter has judged a few hundred rows). Adding a filter means writing one
class and listing it in ``rowstage.build_filters``.
"""

from tzc_data.filters.base import Filter, Verdict, apply_filters
from tzc_data.filters.language import EnglishFilter, english_score
from tzc_data.filters.length import LengthFilter
from tzc_data.filters.repetition import (
                                         Covering,
                                         Cycle,
                                         Repeat,
                                         RepetitionFilter,
                                         Run,
                                         compression_ratio,
                                         copy_run,
                                         covering_unit,
                                         cycling_tail,
                                         dup_ngram_share,
                                         quoted,
                                         repeated_units,
                                         repeating_tail,
                                         skeleton,
                                         top_ngram_share,
)

__all__ = ["Covering", "Cycle", "EnglishFilter", "Filter", "LengthFilter", "Repeat", "RepetitionFilter", "Run",
           "Verdict", "apply_filters", "compression_ratio", "copy_run", "covering_unit", "cycling_tail",
           "dup_ngram_share", "english_score", "quoted", "repeated_units", "repeating_tail", "skeleton",
           "top_ngram_share"]
