"""The run's train step compiled ahead of time for a TPU topology this machine does not have.

JAX compiles ahead of time for a TPU topology it does not have: with libtpu installed (the ``tpu``
extra), ``jax.experimental.topologies.get_topology_desc`` describes the chips of, say, one v5e-8
host, and a program lowered with abstract inputs (``jax.ShapeDtypeStruct`` carrying shardings on a
mesh of those chips) compiles with the TPU compiler. Nothing is allocated and no weights are read:

    abstract model (Gemma 2 2B or Gemma 3 1B shapes, bfloat16 base, float32 LoRA, AdamW state,
      tzc_train.model.views.prepare)
      ─ the step ``tzc-train`` runs (tzc_train.trainer.Trainer: a scan over the ``--grad-accum``
        micro-batches of value_and_grad over the adapters, then the optimizer update) with tzc's
        packed inputs and loss ─ lower on the topology's mesh ─ compile
      ─ memory_analysis() (bytes per chip) and cost_analysis() (FLOPs; Pallas kernels not counted)

An over-budget program fails to compile with ``RESOURCE_EXHAUSTED``: :func:`compile_step` then
raises :class:`~tzc_train.plan.config.DoesNotFit` in one line. tunix skips its activation sharding
constraints when JAX's default device is a CPU (as here); the plan applies them, as they are on a
TPU, so the compiled program is the TPU's.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import types
from typing import Any
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tzc_train.model import bases
from tzc_train.plan.config import CHIPS, DoesNotFit, PlanConfig, PlanError, remat_advice


def topology_mesh(topology: str, shape: tuple[int, int] | None) -> jax.sharding.Mesh:
    """An ``fsdp`` x ``tp`` mesh over the chips of a TPU topology (``v5e:2x4``), described, not attached."""
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-8")  # silences libtpu's start-up warnings
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    # Describing chips attaches none: a second planner (or a test beside a run) may load libtpu too.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    try:
        dims = tuple(int(n) for n in topology.split(":")[1].lower().split("x"))
    except (IndexError, ValueError):
        raise PlanError(f"--topology {topology!r}: expected NAME:AxB, e.g. v5e:2x4") from None
    per_host = (*dims, 1) if math.prod(dims) <= 8 and len(dims) == 2 else (2, 4, 1)
    try:
        devices = topologies.get_topology_desc(topology_name=topology, platform="tpu",
                                               chips_per_host_bounds=per_host).devices
    except Exception as err:  # noqa: BLE001 - libtpu missing or an unknown topology: one line either way
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PlanError(f"--topology {topology}: cannot describe it ({first}); is the tpu extra installed?") from None
    if shape is None:
        tp = math.gcd(len(devices), 4)
        shape = (len(devices) // tp, tp)
    if shape[0] * shape[1] != len(devices):
        raise PlanError(f"--mesh {shape[0]}x{shape[1]} needs {shape[0] * shape[1]} chips; {topology} has {len(devices)}")
    return jax.sharding.Mesh(np.asarray(devices).reshape(shape), ("fsdp", "tp"),
                             axis_types=(jax.sharding.AxisType.Auto,) * 2)


@contextlib.contextmanager
def tpu_activation_sharding():
    """tunix's ``shard()`` as it behaves on a TPU: sharding constraints on the current mesh.

    tunix returns activations unconstrained when ``jax.devices()`` are CPUs, which they are on the
    machine that plans; without this the compiled program would not be the one a TPU runs. Gemma 2's
    module has its own ``shard``; Gemma 3 (and tzc's Gemma 3 attention) call ``sharding_utils.shard``.
    """
    from jax.interpreters import pxla
    from tunix.models.gemma import model as gemma_lib
    from tunix.utils import sharding_utils

    def shard(x: jax.Array, spec: tuple[str | None, ...], eager: bool = False) -> jax.Array:
        mesh = pxla.thread_resources.env.physical_mesh
        return x if mesh.empty else jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*spec)))

    with mock.patch.object(gemma_lib, "shard", shard), mock.patch.object(sharding_utils, "shard", shard):
        yield


@contextlib.contextmanager
def cheap_tracer_probes():
    """Keep flax's ``getattr(value, "sharding", None)`` on traced values cheap.

    flax probes ``.sharding`` on every variable update (each LoRA factor's random draw, each
    optimizer update); on a tracer JAX raises an AttributeError whose message it builds by walking
    the whole trace so far, so building and tracing the model costs quadratic time (minutes at 2B
    scale). The message is all this skips.
    """
    from jax._src.interpreters import partial_eval

    with mock.patch.object(partial_eval.DynamicJaxprTracer, "_origin_msg", lambda self: ""):
        yield


def abstract_training_state(config: PlanConfig, vocab_size: int) -> tuple[Any, Any, Any]:
    """(model, optimizer, gemma config) as shapes only: what ``tzc_train.train`` builds for real."""
    import optax
    import qwix
    from flax import nnx

    from tzc_train.config import LORA_TARGETS
    from tzc_train.model.views import prepare

    base = bases.base(config.model)
    if base.tiny:
        model_config, dtype = bases.tiny_config(base.family, vocab_size), jnp.float32
    else:
        model_config, dtype = bases.real_config(config.model), jnp.bfloat16
    provider = qwix.LoraProvider(module_path=config.lora_targets or LORA_TARGETS, rank=config.lora_rank,
                                 alpha=config.lora_alpha)
    # As trainer.make_trainer builds it; accumulation happens inside the step (no optax.MultiSteps).
    optimizer = optax.inject_hyperparams(optax.adamw)(learning_rate=1e-5, weight_decay=0.0)

    def build() -> tuple[Any, Any]:
        plain = bases.model_class(base.family)(model_config, rngs=nnx.Rngs(0))
        nnx.update(plain, jax.tree.map(lambda x: x.astype(dtype), nnx.state(plain, nnx.Param)))
        model = qwix.apply_lora_to_model(plain, provider, rngs=nnx.Rngs(0), **plain.get_model_input())
        nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.float32), nnx.state(model, nnx.LoRAParam)))
        prepare(model, remat=config.remat, attention=config.attention)
        return model, nnx.Optimizer(model, optimizer, wrt=nnx.LoRAParam)

    with cheap_tracer_probes():
        model, opt = nnx.eval_shape(build)
    return model, opt, model_config


def _sharded(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Abstract arrays of ``tree`` (nnx state) with the shardings their metadata names, on ``mesh``."""
    from flax import nnx

    specs = nnx.get_partition_spec(tree)
    return jax.tree.map(lambda x, spec: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec)),
                        tree, specs)


def _bytes_per_chip(tree: Any) -> int:
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def step_owner(input_fn: Any, loss_fn: Any, grad_accum: int) -> Any:
    """What :class:`tzc_train.trainer.Trainer`'s step reads of its trainer (the input and loss functions
    trainer.make_trainer gives it, the accumulation count), without building a trainer (checkpoints, logs)."""
    from tzc_train.trainer import Trainer

    owner = types.SimpleNamespace(gen_model_input_fn=input_fn, loss_fn=loss_fn, grad_accum=grad_accum)
    owner._summed_loss = functools.partial(Trainer._summed_loss, owner)
    return owner


def compile_step(config: PlanConfig, mesh: jax.sharding.Mesh, vocab_size: int, seq_len: int) -> dict[str, Any]:
    """Lower and compile the train step on ``mesh``; its memory, counts and compile time. Raises
    :class:`DoesNotFit` when the TPU compiler finds it over the chips' memory."""
    import time

    from flax import nnx

    from tzc_train.model.loss import packed_inputs, packed_loss
    from tzc_train.trainer import Trainer

    hbm = CHIPS[config.topology.split(":")[0]][0]
    with mesh:
        model, optimizer, model_config = abstract_training_state(config, vocab_size)
        graph, state = nnx.split((model, optimizer))
        state = _sharded(state, mesh)
        weights = _sharded(nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))), mesh)
        adapters = _sharded(nnx.state(model, nnx.LoRAParam), mesh)
        opt_state = _sharded(nnx.state(optimizer, nnx.optimizer.OptState), mesh)
        rows = NamedSharding(mesh, P("fsdp"))
        # One iterator element of tzc-train: the whole optimizer step's rows, micro-batches stacked.
        batch = {name: jax.ShapeDtypeStruct((config.batch_size * config.grad_accum, seq_len), jnp.int32,
                                            sharding=rows)
                 for name in ("tokens", "segment_ids", "positions", "loss_mask")}
        trainer = step_owner(packed_inputs, packed_loss, config.grad_accum)

        def train_step(state: Any, batch: dict[str, jax.Array]) -> tuple[Any, jax.Array, jax.Array]:
            model, optimizer = nnx.merge(graph, state)
            loss, _, grad_norm = Trainer._accumulating_step(trainer, model, optimizer, batch)
            return nnx.state((model, optimizer)), loss, grad_norm

        out_shardings = (jax.tree.map(lambda x: x.sharding, state), NamedSharding(mesh, P()), NamedSharding(mesh, P()))
        started = time.perf_counter()
        try:
            with tpu_activation_sharding(), cheap_tracer_probes():
                lowered = jax.jit(train_step, donate_argnums=0, out_shardings=out_shardings).lower(state, batch)
            previous = jax.config.jax_exec_time_optimization_effort
            jax.config.update("jax_exec_time_optimization_effort", -1.0 if config.fast_compile else previous)
            try:
                compiled = lowered.compile()
            finally:
                jax.config.update("jax_exec_time_optimization_effort", previous)
        except Exception as err:  # noqa: BLE001 - the TPU compiler's verdict, in one line
            text = str(err)
            if "RESOURCE_EXHAUSTED" not in text:
                raise
            detail = next((line.strip() for line in text.splitlines() if "RESOURCE_EXHAUSTED" in line), text)
            raise DoesNotFit(f"does not fit: batch {config.batch_size} x {seq_len} tokens on {config.topology} "
                            f"needs more than the {hbm / 2**30:.2f} GiB a chip has ({detail[:300]}); "
                            f"lower --batch-size (raise --grad-accum){remat_advice(config.remat)}") from None
        seconds = time.perf_counter() - started

    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {"peak_bytes": (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
                           + memory.temp_size_in_bytes),
            "temp_bytes": memory.temp_size_in_bytes, "xla_flops": float(cost.get("flops", 0.0)),
            "collective_bytes": collective_bytes(compiled.as_text()), "compile_seconds": seconds,
            "weights_bytes": _bytes_per_chip(weights), "adapters_bytes": _bytes_per_chip(adapters),
            "optimizer_bytes": _bytes_per_chip(opt_state), "model_config": model_config,
            "adapter_elements": sum(math.prod(x.shape) for x in jax.tree.leaves(adapters))}


_COLLECTIVE = re.compile(r"=\s*(\(?[a-z0-9\[\],{}:\s()TSE#_*]*?\)?)\s+(all-gather|all-reduce|reduce-scatter|all-to-all|"
                         r"collective-permute)(?:-start)?\(")
_SHAPE = re.compile(r"\b(pred|s8|u8|s16|u16|bf16|f16|s32|u32|f32|s64|u64|f64)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8}


def collective_bytes(hlo: str) -> int:
    """Bytes the collectives of a compiled program's text produce, each op counted once (an op inside
    a loop runs once per iteration, so this is a measure to compare layouts by, not a total)."""
    total = 0
    for match in _COLLECTIVE.finditer(hlo):
        for dtype, dims in _SHAPE.findall(match.group(1)):
            total += _BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


__all__ = ["abstract_training_state", "cheap_tracer_probes", "collective_bytes", "compile_step", "step_owner",
           "topology_mesh", "tpu_activation_sharding"]
