"""native.py: where compiled code is cached, and the extension modules built from numba functions."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba.core import config

from tzc_data import native
from tzc_data.native import compiled_cache, numba_cache

KERNEL = """
import numba


@numba.njit(cache=False)
def total(values, scale):
    out = 0.0
    for v in values:
        out += v
    return out * scale
"""
# Builds the module in a process of its own; each compile appends a line to compiles.txt.
BUILDER = """
import sys
sys.path.insert(0, {folder!r})
import numpy as np
from pathlib import Path
from tzc_data import native

def exports():
    import kernel
    with open({count!r}, "a") as out:
        out.write("compiled\\n")
    return [("total", kernel.total, ("float64", ("float64[C1]", "float64")))]

module = native.build("tzc_test_kernel", [Path({source!r})], exports)
print(module.__file__, module.total(np.arange(4.0), 0.5), "numba" in sys.modules)
"""
LOADER = """
import sys
from pathlib import Path
import numpy as np
from tzc_data import native
module = native.load("tzc_test_kernel", [Path({source!r})])
print(module.total(np.arange(5.0), 2.0) if module else None, "numba" in sys.modules)
"""


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A folder with one numba function, its own cache places (no NUMBA_CACHE_DIR, a private TZC_CACHE)."""
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("TZC_CACHE", str(tmp_path / "tzc"))
    folder = tmp_path / "package"
    folder.mkdir()
    (folder / "kernel.py").write_text(KERNEL)
    return folder


def _build(package, count, tmp_path):
    script = tmp_path / f"builder-{os.urandom(4).hex()}.py"
    script.write_text(BUILDER.format(folder=str(package), count=str(count), source=str(package / "kernel.py")))
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ})


def test_processes_building_at_once_compile_once_and_a_load_needs_no_numba(package, tmp_path):
    count = tmp_path / "compiles.txt"
    assert native.load("tzc_test_kernel", [package / "kernel.py"]) is None  # nothing built yet
    builders = [_build(package, count, tmp_path) for _ in range(2)]
    outputs = [b.communicate(timeout=300) for b in builders]
    assert all(b.returncode == 0 for b in builders), [err for _, err in outputs]
    paths = {out.split()[0] for out, _ in outputs}
    assert len(paths) == 1 and [out.split()[1] for out, _ in outputs] == ["3.0", "3.0"]
    assert count.read_text() == "compiled\n"  # the other found the module: at once, or after the lock
    folder = os.path.dirname(paths.pop())
    assert os.path.dirname(folder) == str(package / "__pycache__")
    name = native._file_name("tzc_test_kernel")
    assert sorted(os.listdir(folder)) == sorted(["tzc_test_kernel.lock", name, name + ".xxh3"])
    script = tmp_path / "loader.py"
    script.write_text(LOADER.format(source=str(package / "kernel.py")))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["20.0", "False"]  # compiled code, and numba never imported
    (package / "kernel.py").write_text(KERNEL + "\n# an edit\n")
    assert native.load("tzc_test_kernel", [package / "kernel.py"]) is None  # another version: not this module


def test_a_module_that_cannot_be_built_is_none_says_why_and_leaves_nothing(package, monkeypatch, caplog):
    def no_compiler(*_):
        raise RuntimeError("error: command 'gcc' failed: No such file or directory")

    monkeypatch.setattr(native, "_compile", no_compiler)
    with caplog.at_level(logging.WARNING, logger="tzc_data.native"):
        assert native.build("tzc_test_kernel", [package / "kernel.py"], lambda: []) is None
    assert "could not build the native module tzc_test_kernel (RuntimeError: error: command 'gcc' failed" in caplog.text
    (folder,) = (package / "__pycache__").iterdir()
    assert os.listdir(folder) == ["tzc_test_kernel.lock"]


def test_a_failed_compile_removes_its_work_folder(package, monkeypatch):
    def broken():
        raise ValueError("no such function")

    with pytest.raises(ValueError):
        native._compile("tzc_test_kernel", broken, package, package / "x.so")
    assert sorted(p.name for p in package.iterdir()) == ["kernel.py"]


def test_specs_give_numbas_types_and_matches_checks_what_the_module_would_misread():
    from numba import types

    spec = (("int64", "float64"), ("bytes", "uint64[A1]", "uint8[C2]", "bool", "float64"))
    signature = native.numba_signature(spec)
    assert signature.return_type == types.Tuple((types.int64, types.float64))
    assert signature.args == (types.Bytes(types.uint8, 1, "C", readonly=True), types.Array(types.uint64, 1, "A"),
                              types.Array(types.uint8, 2, "C"), types.boolean, types.float64)
    assert native.numba_signature(("none", ("int64", "int64"))).return_type == types.none
    assert native.numba_signature((("int64", "int64"), ())).return_type == types.UniTuple(types.int64, 2)
    good = [b"x", np.zeros((3, 2), np.uint64)[:, 1], np.zeros((2, 2), np.uint8), True, 0.5]
    assert native.matches(spec, good)
    for k, bad in [(0, bytearray(b"x")), (1, np.zeros(3, np.int64)), (1, np.zeros((3, 1), np.uint64)),
                   (2, np.zeros((2, 4), np.uint8)[:, ::2]), (2, np.zeros((2, 2), np.int8)), (3, 2**63),
                   (4, "0.5")]:
        assert not native.matches(spec, good[:k] + [bad] + good[k + 1:]), (k, bad)
    assert not native.matches(spec, good[:-1])
    assert native.matches(("none", ("int64[C1]",)), [np.zeros(3, np.dtype("<i8"))])
    assert not native.matches(("none", ("int64[C1]",)), [np.zeros(3, np.dtype(">i8"))])


def test_compiled_code_is_cached_by_its_version_in_the_first_folder_that_can_be_written(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", "")
    monkeypatch.setenv("TZC_CACHE", str(tmp_path / "tzc"))
    package = tmp_path / "package"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    (package / "b.py").write_text("y = 2\n")
    sources = [package / "a.py", package / "b.py"]
    first = compiled_cache(sources)
    assert os.path.dirname(first) == str(package / "__pycache__") and os.path.basename(first).startswith("tzc-")
    assert compiled_cache(sources[::-1]) == first  # the files' order does not matter
    (package / "b.py").write_text("y = 3\n")
    second = compiled_cache(sources)
    assert second != first and os.path.dirname(second) == str(package / "__pycache__")  # an edit: a fresh cache
    version = os.path.basename(second)
    blocked = tmp_path / "blocked"  # its __pycache__ cannot be made: a file stands in the way
    blocked.mkdir()
    (blocked / "__pycache__").write_text("")
    copies = [blocked / "a.py", blocked / "b.py"]
    for source, copy in zip(sources, copies):
        copy.write_bytes(source.read_bytes())
    assert compiled_cache(copies) == str(tmp_path / "tzc" / "numba" / version)  # the version is the files'
    monkeypatch.setenv("TZC_CACHE", str(tmp_path / "blocked" / "__pycache__" / "tzc"))
    fallback = compiled_cache(copies)  # nowhere to write: a fresh folder, never numba's own places
    assert os.path.basename(fallback).startswith(f"tzc-numba-{version[4:]}-") and os.access(fallback, os.W_OK)
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "numba"))
    assert compiled_cache(sources) == str(tmp_path / "numba" / version)  # NUMBA_CACHE_DIR first
    assert compiled_cache(sources, numba_dir="") == second  # as given, where numba is not imported
    with numba_cache("somewhere"):
        assert config.CACHE_DIR == "somewhere"
    assert config.CACHE_DIR == str(tmp_path / "numba")


def test_load_looks_in_every_place_build_may_write(package, tmp_path, monkeypatch):
    """A module built under NUMBA_CACHE_DIR, or under TZC_CACHE's numba/ where the package folder
    is read-only, is found there."""
    source = package / "kernel.py"
    for where in ("numba", "tzc/numba"):
        folder = tmp_path / where / f"tzc-{native._version([source])}"
        folder.mkdir(parents=True)
        (folder / native._file_name("tzc_test_kernel")).write_text("")
        if where == "numba":
            monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
        else:
            monkeypatch.delenv("NUMBA_CACHE_DIR")
            monkeypatch.setenv("TZC_CACHE", str(tmp_path / "tzc"))
        imported = []
        monkeypatch.setattr(native, "_import", lambda name, path: imported.append(path) or "module")
        assert native.load("tzc_test_kernel", [source]) == "module"
        assert imported == [folder / native._file_name("tzc_test_kernel")]
        (folder / native._file_name("tzc_test_kernel")).unlink()


def test_the_file_name_holds_the_python_abi_and_numpys_major_version():
    import sysconfig

    name = native._file_name("tzc_x")
    assert name == f"tzc_x.numpy{np.__version__.split('.')[0]}{sysconfig.get_config_var('EXT_SUFFIX')}"



def test_a_damaged_module_is_not_loaded_and_the_next_build_replaces_it(package, tmp_path, caplog):
    count = tmp_path / "compiles.txt"
    builder = _build(package, count, tmp_path)
    out, err = builder.communicate(timeout=300)
    assert builder.returncode == 0, err
    path = out.split()[0]
    with open(path, "r+b") as damaged:
        damaged.truncate(1000)  # an ELF header, then nothing: mapping it ends in SIGBUS
    (package / "__pycache__" / os.path.basename(os.path.dirname(path)) / ".tzc_test_kernel-abcd1234").mkdir()
    script = tmp_path / "loader.py"  # in a process of its own: a crash would not take the tests with it
    script.write_text(LOADER.format(source=str(package / "kernel.py")))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "None" and "its size or bytes are not those tzc built there" in done.stderr
    assert "it will be built again" in done.stderr
    builder = _build(package, count, tmp_path)  # replaces it, and the killed build's work folder
    out, err = builder.communicate(timeout=300)
    assert builder.returncode == 0, err
    assert out.split()[:2] == [path, "3.0"] and count.read_text() == "compiled\n" * 2
    assert not any(name.startswith(".tzc_test_kernel-") for name in os.listdir(os.path.dirname(path)))
    os.remove(path + ".xxh3")
    with caplog.at_level(logging.WARNING, logger="tzc_data.native"):
        assert native.load("tzc_test_kernel", [package / "kernel.py"]) is None  # no record of what was built
    assert "no record of its digest" in caplog.text


def test_a_module_overwritten_in_place_at_its_size_is_refused(package, tmp_path):
    """Not only truncation: other bytes at either end, at the same size."""
    count = tmp_path / "compiles.txt"
    builder = _build(package, count, tmp_path)
    out, err = builder.communicate(timeout=300)
    assert builder.returncode == 0, err
    path = out.split()[0]
    recorded = open(path + ".xxh3").read().strip()
    assert recorded == native._digest(path) and recorded.split()[0] == str(os.path.getsize(path))
    for offset in (100, os.path.getsize(path) - 100):
        with open(path, "r+b") as damaged:
            damaged.seek(offset)
            original = damaged.read(1)
            damaged.seek(offset)
            damaged.write(bytes([original[0] ^ 0xFF]))
        assert native._digest(path) != recorded
        with pytest.raises(ImportError, match="its size or bytes are not those tzc built there"):
            native._import("tzc_test_kernel", Path(path))
        with open(path, "r+b") as restored:
            restored.seek(offset)
            restored.write(original)
    assert native._digest(path) == recorded
