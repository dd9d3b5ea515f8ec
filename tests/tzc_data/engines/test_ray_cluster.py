"""A real two-node Ray cluster on this machine: a head and a worker node, each with its own raylet
(Ray's ``cluster_utils``). A build given ``--ray-address`` runs its units and its shard tasks on
both nodes, as Ray's own task records show, and writes the bytes of ``--engine local``; a worker
node killed mid-build either lets the build complete on the head or fails it in one line, and
``--resume`` finishes it to the same bytes."""

import os
import subprocess
import sys
import time

import pytest
import ray  # the extra tzc[ray]: `make test` installs it, and its absence is a failure, not a skip
from ray.cluster_utils import Cluster
from conftest import sha256s

from tzc_data.cli import main

RANGE = "0:3000"  # 12 units of the synthetic source


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    worker = nodes.add_node(num_cpus=2)
    nodes.wait_for_nodes()
    try:
        yield nodes, worker
    finally:
        nodes.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_path):
    out = tmp_path_factory.mktemp("ref") / "local"
    assert main(["build", "--out", str(out), *_args(tiny_model_path), "--engine", "local"]) == 0
    return out


def _args(tiny_model_path: str) -> list[str]:
    return ["--source", "synthetic", "--range", RANGE, "--tokenizer", tiny_model_path, "--seq-len", "8192",
            "--rows-per-shard", "64", "--min-kept-ratio", "0", "--no-progress"]


def _nodes_that_ran(address: str) -> dict[str, set[str]]:
    """From the cluster's task events (the GCS's record of every task attempt): the nodes that
    ran the row stage's actor calls and the shard tasks."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        ran: dict[str, set[str]] = {"units": set(), "shards": set()}
        for raw in state._connect_and_get_accessor().get_task_events():
            event = gcs_pb2.TaskEvents.FromString(raw)
            name = event.task_info.func_or_class_name
            node = event.state_updates.node_id.hex() if event.HasField("state_updates") else ""
            if node and name.endswith("(MapBatches(_StageActor)).submit"):
                ran["units"].add(node)
            elif node and name.endswith("write_shard"):
                ran["shards"].add(node)
        return ran
    finally:
        ray.shutdown()


def test_units_and_shards_run_on_both_nodes_and_write_the_local_bytes(cluster, reference, tiny_model_path, tmp_path):
    nodes, worker = cluster
    out = tmp_path / "ray"
    assert main(["build", "--out", str(out), *_args(tiny_model_path), "--engine", "ray",
                 "--ray-address", nodes.address]) == 0
    assert sha256s(out) == sha256s(reference)
    ran = _nodes_that_ran(nodes.address)
    both = {nodes.head_node.node_id, worker.node_id}
    assert ran["units"] == both and ran["shards"] == both, (ran, both)


def test_a_worker_node_lost_mid_build_completes_or_fails_in_one_line_and_resumes_to_the_same_bytes(
        cluster, reference, tiny_model_path, tmp_path):
    nodes, worker = cluster
    out, markers = tmp_path / "run", tmp_path / ".run.tzc-partial" / ".units"
    command = [sys.executable, "-m", "tzc_data.cli", "build", "--out", str(out), *_args(tiny_model_path),
               "--engine", "ray", "--ray-address", nodes.address]
    build = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline = time.time() + 180
    while not list(markers.glob("u*.json")) and time.time() < deadline and build.poll() is None:
        time.sleep(0.05)
    assert build.poll() is None, build.communicate()[1]
    assert len(list(markers.glob("u*.json"))) < 12  # mid-build
    nodes.remove_node(worker)  # its raylet and every worker process on it die
    _, err = build.communicate(timeout=240)
    print(f"after the worker node was lost, the build exited {build.returncode}: {err.strip()[-300:]}")
    if build.returncode:
        # One line of tzc's (Ray's own processes may log their warnings beside it), no tzc traceback.
        errors = [line for line in err.splitlines() if line.startswith("tzc-data: error: ")]
        assert len(errors) == 1 and "--resume" in errors[0] and "tzc_data" not in err.replace(str(out), ""), err
        assert main(["build", "--out", str(out), *_args(tiny_model_path), "--engine", "ray",
                     "--ray-address", nodes.address, "--resume"]) == 0
    assert sha256s(out) == sha256s(reference)
