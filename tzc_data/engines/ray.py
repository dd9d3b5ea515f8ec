"""``--engine ray``: the build's units on a Ray cluster (or a local Ray instance), through Ray Data.

The shape is :class:`tzc_data.engines.base.Executor`'s: call the row stage on every unit, yield the
done-markers as units finish. On Ray:

- a :class:`~ray.data.Datasource` with one ``ReadTask`` per unit. The unit list decides the tasks
  (never Ray's parallelism), and a read task yields only the unit's descriptor (one row: its index
  and the pickled :class:`~tzc_data.sources.Unit`), not the unit's rows: the rows are read where
  the unit runs, once, by the source;
- ``map_batches`` with an actor class holding the :class:`~tzc_data.build.rowstage.RowStage`: the
  stage (config, the tokenizer as its model's bytes, the excluded prompts) is put in the object
  store once; each actor fetches it and builds its tokenizer and filters once, then runs units
  one by one. No node fetches the tokenizer from anywhere else;
- the markers, a few hundred bytes a unit, come back to the driver, in any order: they are keyed
  by unit index. The driver plans, dedups, packs and writes the manifest, in unit order as for
  every engine; the shards are Ray tasks (:meth:`RayExecutor.map`), spread over the nodes, each
  reading its examples' tokens from the units' files. The output is the same bytes as
  ``--engine local``.

Ray's traps, and what this does about each:

- *Block order is not preserved* (by default): nothing depends on it; markers carry their index.
- *Object-store memory*: no token data goes through it. A unit writes its files to the staging
  directory itself (:mod:`tzc_data.build.units`); only descriptors and markers travel.
- *Shared storage*: the staging directory (``--out``'s hidden sibling, with its ``.units/``) and a
  local ``--source`` must be at the same path on every node. A unit run on a node that does not
  see the staging directory's ``plan.json`` fails the build in one line, before it writes.
- *A worker dying mid-unit* (the OOM killer, a lost node): Ray restarts the actor and runs the
  unit again, a few times (:data:`RETRIES`); past that the build fails in one line and
  ``--resume`` redoes the units without a marker. A unit's files are renamed into place whole and
  its marker is written last, so a unit cut short is never taken as done.
- *An actor pool as large as the CPU count hangs Ray Data* (the read tasks then never get a CPU):
  the pool is the cluster's CPUs less one by default, and a larger ``--workers`` is refused.

Why Ray Data rather than plain Ray actors: the issue asks for it, and it brings the actor pool,
actor restarts with task retries, back-pressure and the dashboard's per-operator view for free.
The cost is a second or two of planning per build and one CPU left to the read tasks.

Ray is an extra (``pip install tzc[ray]``), imported only here, and this module only when the
engine is chosen: ``tzc_data`` imports without Ray.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import socket
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tzc_data.build import units as unit_files
from tzc_data.build.units import UnitDone
from tzc_data.engines.base import Executor, run_unit
from tzc_data.errors import ConfigError, OutputError, TzcError
from tzc_data.process import allow

RETRIES = 2  # times a unit whose actor died is run again (on a restarted actor) before the build fails
_RAY_VERSION = "2.60.0"


class RayExecutor(Executor):
    """Run units on Ray: ``address`` None starts a local instance (unless this process is already
    connected to one); ``actors`` None is the cluster's CPUs less one. Shards are written by Ray
    tasks on the cluster's nodes (:meth:`map`), not by the driver. The connection made by the
    first call lasts until :meth:`close`."""

    def __init__(self, *, address: str | None = None, actors: int | None = None, retries: int = RETRIES):
        self.address, self.actors, self.retries = address, actors, retries
        self._ray: Any = None
        self._started_here = False

    def _connected(self) -> Any:
        if self._ray is None:
            ray = _import_ray()
            self._started_here = _connect(ray, self.address)
            self._ray = ray
        return self._ray

    def close(self) -> None:
        """Disconnect, when this executor connected (a process already connected stays so)."""
        if self._started_here:
            self._ray.shutdown()
        self._ray, self._started_here = None, False

    def run(self, stage: Callable[[Any], UnitDone], units: Sequence[Any]) -> Iterator[UnitDone]:
        if not units:
            return
        yield from self._map(self._connected(), stage, units)

    def map(self, task: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``task(item)`` for every item as Ray tasks, one CPU each, spread over the cluster's
        nodes (they read the units' files and write into the staging directory, which every node
        sees); results in order. A task lost with its node runs again elsewhere (:data:`RETRIES`)."""
        if not items:
            return []
        ray = self._connected()
        remote = ray.remote(num_cpus=1, max_retries=self.retries, scheduling_strategy="SPREAD")(task)
        try:
            return ray.get([remote.remote(item) for item in items])
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, (TzcError, OSError)):
                raise cause from None
            raise TzcError(_ray_failure(err, items, self.retries, "shards")) from None
        except ray.exceptions.RayError as err:
            raise TzcError(_ray_failure(err, items, self.retries, "shards")) from None

    def _map(self, ray: Any, stage: Callable[[Any], UnitDone], units: Sequence[Any]) -> Iterator[UnitDone]:
        from ray.data import ActorPoolStrategy, DataContext

        actors = min(_pool_size(ray, self.actors), len(units))
        # Once into the object store, whatever the number of actors (inside a list: each actor
        # fetches it itself, once; Ray Data does not resolve a reference among its arguments).
        shipped = [ray.put(stage)]
        with warnings.catch_warnings():
            # Ray 2.60 has no named parameter for the actors' restarts and retries yet: the
            # defaults (-1, -1) would run a unit that kills its worker (out of memory) forever.
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", ray.util.annotations.RayDeprecationWarning)
            dataset = ray.data.read_datasource(_units_datasource(units)).map_batches(
                _StageActor, fn_constructor_args=(shipped,), batch_size=1, batch_format="pyarrow",
                compute=ActorPoolStrategy(size=actors), num_cpus=1,
                max_restarts=self.retries, max_task_retries=self.retries)
        try:
            with _quiet_ray_data_console(DataContext.get_current()):
                for batch in _watching_nodes(ray, dataset.iter_batches(batch_size=None, batch_format="pyarrow"),
                                             len(units)):
                    for blob in batch.column("result").to_pylist():
                        done, failure = pickle.loads(blob)
                        if failure is not None:
                            raise failure
                        yield done
        except TzcError:
            raise
        except ray.exceptions.RayError as err:
            raise TzcError(_ray_failure(err, units, self.retries, "units")) from None


def _alive_nodes(ray: Any) -> set[str]:
    return {node["NodeID"] for node in ray.nodes() if node.get("Alive")}


def _watching_nodes(ray: Any, batches: Iterator[Any], count: int, every: float = 1.0) -> Iterator[Any]:
    """``batches``, taken in a thread of their own while this one checks, every ``every`` seconds,
    that no node of the cluster was lost. A lost node fails the build in one line: Ray Data would
    restart the node's actors, and wait for ever where the nodes left have no CPU for them (a
    fixed pool). The units done so far keep their markers: ``--resume`` runs the others."""
    results: queue.Queue = queue.Queue()
    stop = threading.Event()

    def consume() -> None:
        try:
            for batch in batches:
                results.put(("batch", batch))
                if stop.is_set():  # the build failed or was interrupted: stop Ray Data's execution
                    break
        except BaseException as err:  # handed to the build's thread, which raises it
            results.put(("error", err))
        finally:
            getattr(batches, "close", lambda: None)()
        results.put(("end", None))

    alive = _alive_nodes(ray)
    threading.Thread(target=consume, name="tzc-ray-units", daemon=True).start()
    try:
        while True:
            try:
                kind, value = results.get(timeout=every)
            except queue.Empty:
                lost = alive - _alive_nodes(ray)
                if lost:
                    raise TzcError(f"the Ray build lost node {sorted(lost)[0][:12]}... of its cluster while "
                                   f"running {count:,} units; run again with --resume (the units done are "
                                   "kept)") from None
                continue
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


def _units_datasource(units: Sequence[Any]) -> Any:
    """The units as a Ray Data source (the class is made here: Ray is imported only when used)."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class UnitsDatasource(Datasource):
        """One read task per unit; each yields the unit's descriptor, one row."""

        def __init__(self, units: Sequence[Any]):
            self._units = list(units)

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[Any]:
            return [ReadTask(_Descriptor(unit), BlockMetadata(num_rows=1, size_bytes=None, exec_stats=None,
                                                              input_files=None))
                    for unit in self._units]

        def get_name(self) -> str:
            return "TzcUnits"

    return UnitsDatasource(units)


class _Descriptor:
    """A read task's body: the unit's descriptor as a one-row Arrow table."""

    def __init__(self, unit: Any):
        self.unit = unit

    def __call__(self) -> list[Any]:
        import pyarrow as pa

        return [pa.table({"index": pa.array([self.unit.index], pa.int64()),
                          "unit": pa.array([pickle.dumps(self.unit)], pa.binary())})]


class _StageActor:
    """Holds the row stage (fetched, and its tokenizer and filters built, once per actor); runs units."""

    def __init__(self, shipped: list[Any]):
        import ray

        self.stage = ray.get(shipped[0])

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        results = []
        for blob in batch.column("unit").to_pylist():
            unit = pickle.loads(blob)
            failure = _unseen_staging(self.stage.staging)
            results.append(pickle.dumps((None, failure) if failure else run_unit(self.stage, unit)))
        return pa.table({"index": batch.column("index"), "result": pa.array(results, pa.binary())})


@contextlib.contextmanager
def _quiet_ray_data_console(context: Any) -> Iterator[None]:
    """Ray Data's progress bars and console lines (execution plans, a failed task's traceback)
    off while the map runs, then as they were: tzc's bar and one-line errors are the console.
    The lines still go to Ray Data's log file, in the Ray session's ``logs/ray-data/``."""
    handlers = [h for h in logging.getLogger("ray.data").handlers if not isinstance(h, logging.FileHandler)]
    levels, bars = [h.level for h in handlers], context.enable_progress_bars
    for handler in handlers:
        handler.setLevel(logging.CRITICAL)
    context.enable_progress_bars = False
    try:
        yield
    finally:
        context.enable_progress_bars = bars
        for handler, level in zip(handlers, levels):
            handler.setLevel(level)


def _unseen_staging(staging: str) -> TzcError | None:
    """An error when this node does not see the build's staging directory (not shared storage):
    the driver wrote its ``plan.json`` before the first unit."""
    if os.path.isfile(os.path.join(unit_files.folder(staging), unit_files.PLAN)):
        return None
    return OutputError(f"the Ray worker on {socket.gethostname()} does not see the build's staging directory "
                       f"{staging}: --out must be on storage that every node mounts at the same path")


def _import_ray() -> Any:
    allow("pandas")  # Ray Data imports it (a tzc-data process refuses it: tzc_data.process)
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is ray[data]: pandas, pyarrow, fsspec)
    except ImportError as err:
        raise ConfigError(f"--engine ray needs Ray Data: pip install 'tzc[ray]' (ray[data]=={_RAY_VERSION}); "
                          f"importing it failed: {err}") from None
    return ray


def _connect(ray: Any, address: str | None) -> bool:
    """Connect to ``address`` (or start a local instance); True when this call started or joined
    it, so that the build disconnects after. A process already connected keeps its connection."""
    _check_reachable(address)
    if ray.is_initialized():
        return False
    # Errors only: Ray's Python side otherwise warns, on every start, that token authentication is on.
    # Without an address, "local": a new instance of this build's own. Ray's default (None) would join
    # whatever cluster /tmp/ray/ray_current_cluster or RAY_ADDRESS names, another user's included.
    try:
        info = ray.init(address=address or "local", logging_level=logging.ERROR, log_to_driver=False,
                        configure_logging=True)
    except (ConnectionError, ValueError, RuntimeError) as err:
        where = f"--ray-address {address}" if address else "a local Ray instance"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{where}: cannot start or reach Ray ({first})") from None
    dashboard = getattr(info, "dashboard_url", None) or (info.get("webui_url") if hasattr(info, "get") else None)
    print(f"tzc-data: Ray {'at ' + address if address else 'local instance'}"
          f"{', dashboard http://' + dashboard if dashboard else ''}", file=sys.stderr, flush=True)
    return True


def _check_reachable(address: str | None) -> None:
    """Refuse a ``HOST:PORT`` where nothing listens, in seconds: ``ray.init`` would retry for minutes."""
    if not address or address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except (OSError, ValueError) as err:
        raise ConfigError(f"--ray-address {address}: no Ray head answers there ({err}); start one with "
                          "`ray start --head` and give the address it prints") from None


def _pool_size(ray: Any, asked: int | None) -> int:
    """The actor pool: ``asked``, or the cluster's CPUs less one; refused when it leaves no CPU
    for Ray Data's read tasks (such a pool hangs Ray Data)."""
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if asked is None:
        if cpus < 2:
            raise ConfigError(f"the Ray cluster has {cpus} CPU(s): --engine ray needs at least 2 (one actor "
                              "and one for Ray Data's read tasks)")
        return cpus - 1
    if asked >= cpus:
        raise ConfigError(f"--workers {asked}: the Ray cluster has {cpus} CPUs; leave one for Ray Data's read "
                          f"tasks (an actor pool as large as the CPU count hangs it): at most {max(cpus - 1, 0)}")
    return asked


def _ray_failure(err: Exception, units: Sequence[Any], retries: int, what: str = "units") -> str:
    """One line for a failure of Ray itself (a worker that died past its retries, a lost node)."""
    text = [line.strip() for line in str(err).splitlines() if line.strip()]
    first = text[0] if text else type(err).__name__
    return (f"the Ray build failed ({type(err).__name__}: {first[:300]}) while running {len(units):,} {what}; a "
            f"worker that dies {retries + 1} times on a task (out of memory?) fails the build (Ray's logs: the "
            "session's logs/ folder on each node): run again with --resume, or with fewer --workers")
