"""A tzc process's settings: made by the tzc-data command and its workers, never by an import."""

import json
import subprocess
import sys

import pytest

from tzc_data.text.tokenize import gemma2_tokenizer_path

# What a process ends with: the refused packages it imported, and whether pyarrow and pandas still work.
_REPORT = """
import json, sys
{setup}
import pyarrow as pa
table = pa.table({{"a": pa.array([1, 2]), "b": pa.array(["x", None])}})
try:
    import pandas
    pandas_imports = True
except ImportError:
    pandas_imports = False
print(json.dumps({{"imported": sorted(m for m in ("pandas", "scipy") if m in sys.modules),
                  "pandas_imports": pandas_imports, "rows": table.num_rows}}))
"""


def _report(setup: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _REPORT.format(setup=setup)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_libraries_import_pandas_and_scipy_for_nothing_without_the_settings():
    """The premise (make test installs both: pandas for the trainer, SciPy for JAX): pyarrow imports
    pandas on a first array, numba SciPy on its first compiled call."""
    found = _report("import numba, numpy as np\n(numba.njit(lambda x: x + 1))(np.int64(1))")
    assert found["imported"] == ["pandas", "scipy"] and found["pandas_imports"]


def test_own_process_refuses_them_and_arrow_and_numba_go_on_without():
    found = _report("from tzc_data.process import own_process\nown_process()\n"
                    "import numba, numpy as np\nassert (numba.njit(lambda x: x + 1))(np.int64(1)) == 2")
    assert found == {"imported": [], "pandas_imports": False, "rows": 2}


def test_importing_tzc_data_or_calling_main_changes_nothing(tmp_path):
    argv = ["build", "--source", "synthetic", "--range", "0:20", "--out", str(tmp_path / "b"),
            "--tokenizer", str(gemma2_tokenizer_path()), "--no-progress"]
    assert _report(f"import tzc_data, tzc_data.cli\nassert tzc_data.cli.main({argv!r}) == 0")["pandas_imports"]


def test_a_process_that_imported_pandas_keeps_it():
    found = _report("import pandas\nfrom tzc_data.process import own_process\nown_process()\nown_process()")
    assert "pandas" in found["imported"] and found["pandas_imports"]


_WORKERS = """
import sys
sys.path.insert(0, {folder!r})
from probe import pandas_imports
from tzc_data.engines.processes import ProcessExecutor
from tzc_data.process import own_process
if __name__ == "__main__":
    if sys.argv[1] == "command":
        own_process()
    print(ProcessExecutor(2).map(pandas_imports, [0, 1]))
"""


@pytest.mark.parametrize("parent, expected", [("command", "[False, False]"), ("library", "[True, True]")])
def test_the_workers_of_engine_processes_refuse_what_their_parent_refuses(tmp_path, parent, expected):
    """A worker of the tzc-data command refuses pandas; one of a library call (a notebook's
    build) does not, so a source that imports pandas builds the same on every engine."""
    (tmp_path / "probe.py").write_text("def pandas_imports(_):\n    try:\n        import pandas  # noqa: F401\n"
                                       "    except ImportError:\n        return False\n    return True\n")
    script = tmp_path / "workers.py"
    script.write_text(_WORKERS.format(folder=str(tmp_path)))
    done = subprocess.run([sys.executable, str(script), parent], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


_PROBE = """
import atexit, runpy, sys
import tzc_data.native
if sys.argv.pop(1) == "just-in-time":  # as where no extension module can be built
    tzc_data.native.load = tzc_data.native.build = lambda *_: None
def report():
    with open("/proc/self/maps") as maps:
        native = sorted({line.split("/")[-1].split(".")[0] for line in maps if "/tzc-" in line and ".so" in line})
    unasked = ("pandas", "scipy", "tqdm", "numpy.random")  # tqdm: no bar is shown; numpy.random: minhash's draws
    print("IMPORTED", sorted(m for m in unasked if m in sys.modules), "numba" in sys.modules, native,
          file=sys.stderr)
atexit.register(report)
sys.argv = ["tzc-data", *sys.argv[1:]]
runpy.run_module("tzc_data.cli", run_name="__main__")
"""


@pytest.mark.parametrize("how, expected", [
    ("native", "IMPORTED [] False ['tzc_filters', 'tzc_loops']"),  # compiled code without numba
    ("just-in-time", "IMPORTED ['numpy.random'] True []"),  # numba (which imports numpy.random), without SciPy
])
def test_the_tzc_data_command_builds_without_importing_either(tmp_path, how, expected):
    """The command (``python -m tzc_data.cli`` runs :func:`tzc_data.cli.run`, as the console script
    does), on 3,000 rows: the compiled filters and loops load from their extension modules, or
    through numba where none can be built."""
    from tzc_data.build import loops
    from tzc_data.filters.compiled import kernels

    kernels(True), loops.module(build=True)  # built here if need be (a test that cannot build them fails)
    probe = tmp_path / "probe.py"
    probe.write_text(_PROBE)
    done = subprocess.run([sys.executable, str(probe), how, "build", "--source", "synthetic", "--range", "0:3000",
                           "--out", str(tmp_path / "b"), "--tokenizer", str(gemma2_tokenizer_path()), "--no-progress"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert expected in done.stderr


def test_allow_lifts_a_refusal_and_the_ray_engine_lifts_pandas_for_ray_data():
    found = _report("from tzc_data.process import allow, own_process\nown_process()\nallow('pandas')")
    assert found["pandas_imports"]
    done = subprocess.run([sys.executable, "-c", "from tzc_data.process import own_process\nown_process()\n"
                           "from tzc_data.engines.ray import _import_ray\nimport sys\n_import_ray()\n"
                           "print('pandas' in sys.modules, 'scipy' in sys.modules)"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == ["True", "False"], done.stderr


def test_a_tzc_process_takes_ctrl_c_once_and_ignores_it_after():
    code = ("import os, signal\nfrom tzc_data.process import own_process\nown_process()\n"
            "try:\n    os.kill(os.getpid(), signal.SIGINT)\n    signal.pthread_sigmask(signal.SIG_BLOCK, [])\n"
            "except KeyboardInterrupt:\n    print('interrupted')\n"
            "os.kill(os.getpid(), signal.SIGINT)\nsignal.pthread_sigmask(signal.SIG_BLOCK, [])\nprint('ignored')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["interrupted", "ignored"], done.stderr
