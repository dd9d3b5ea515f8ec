"""loops.py: a build's serial passes run every loop from the extension module, given exactly the
types it was built for (the module converts without checking; a mismatch would misread memory).
The loops' results, every way they run, are tested with their passes (test_dedup, test_pack)."""

import numpy as np
import pytest
from numba import types

from tzc_data import native
from tzc_data.build import loops
from tzc_data.cli import main


def _fits(inferred, declared) -> bool:
    """An argument numba infers as ``inferred`` is read as such by a parameter declared ``declared``."""
    if isinstance(declared, types.Array):
        return isinstance(inferred, types.Array) and declared.layout in ("A", inferred.layout) \
            and (inferred.dtype, inferred.ndim) == (declared.dtype, declared.ndim)
    return inferred == declared


def test_a_builds_serial_passes_call_every_loop_in_the_module_with_the_types_numba_infers(tmp_path, monkeypatch):
    calls = {}
    real = native.matches
    names = {id(spec): name for name, spec in loops.SPECS.items()}

    def spy(spec, arguments):
        matched = real(spec, arguments)
        calls.setdefault(names[id(spec)], []).append((matched, arguments))
        return matched

    assert loops.module(build=True) is not None  # a build this small would not build it (a test that cannot fails)
    monkeypatch.setattr(native, "matches", spy)
    assert main(["build", "--source", "synthetic", "--range", "0:700", "--out", str(tmp_path / "b"), "--no-progress",
                 "--min-kept-ratio", "0"]) == 0
    assert sorted(calls) == sorted(loops.SPECS)
    assert all(matched for found in calls.values() for matched, _ in found)
    for name, found in calls.items():
        declared = native.numba_signature(loops.SPECS[name])
        jit = loops._compiled(name)
        for _, arguments in found:
            inferred = jit.typeof_pyval  # the dispatcher's own typing of a value
            assert all(_fits(inferred(value), want) for value, want in zip(arguments, declared.args, strict=True)), name
        jit(*found[0][1])
        assert _fits(jit.nopython_signatures[-1].return_type, declared.return_type), name


@pytest.mark.parametrize("bad", ["dtype", "strides"])
def test_arguments_of_other_types_run_just_in_time_not_in_the_module(bad, monkeypatch):
    lengths = np.array([5, 3, 9, 1], np.int64)
    order = np.argsort(-lengths, kind="stable")
    row_of = np.empty(8 if bad == "strides" else 4, np.int32 if bad == "dtype" else np.int64)
    target = row_of if bad == "dtype" else row_of[::2]
    used = []
    real = loops._compiled
    monkeypatch.setattr(loops, "_compiled", lambda name: used.append(name) or real(name))
    rows = loops.run(loops.best_fit_decreasing, 4, lengths, order, 10, 1, target, compiled=True)
    assert used == ["best_fit_decreasing"] and rows == 2
    assert sorted(np.asarray(target).tolist()) == [0, 0, 1, 1]
