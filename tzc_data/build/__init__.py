"""The build: a row range in, a finished build folder out.

:mod:`.pipeline` is the one place that knows the order (plan → map → dedup → pack → write →
publish); each stage is a module here: :mod:`.units` (the plan and a unit's files),
:mod:`.rowstage` (the map), :mod:`.dedup` (first kept wins), :mod:`.pack`, :mod:`.write` and
:mod:`.publish` (staging, lock, guardrail, rename into place). :mod:`.config` is the build's
options. Engines (:mod:`tzc_data.engines`) run the map and the shard writers.
"""
