"""``tzc-train plan``: will this run fit the TPU, and how long will it take? Answered on any machine.

JAX compiles ahead of time for a TPU topology it does not have: with libtpu installed (the ``tpu``
extra), ``jax.experimental.topologies.get_topology_desc`` describes the chips of, say, one v5e-8
host, and a program lowered with abstract inputs (``jax.ShapeDtypeStruct`` carrying shardings on a
mesh of those chips) compiles with the TPU compiler. Nothing is allocated and no weights are read:

    abstract model (Gemma 2 2B or Gemma 3 1B shapes, bfloat16 base, float32 LoRA, AdamW state,
      tzc_train.model.prepare)
      ─ the step ``tzc-train`` runs (tzc_train.trainer.Trainer: a scan over the ``--grad-accum``
        micro-batches of value_and_grad over the adapters, then the optimizer update) with tzc's
        packed inputs and loss ─ lower on the topology's mesh ─ compile
      ─ memory_analysis() (bytes per chip) and cost_analysis() (FLOPs; Pallas kernels not counted)

An over-budget program fails to compile with ``RESOURCE_EXHAUSTED``: the plan then refuses in one
line. tunix skips its activation sharding constraints when JAX's default device is a CPU (as here);
the plan applies them, as they are on a TPU, so the compiled program is the TPU's.

The projected time assumes a stated MFU (``--mfu``): model FLOPs per step (forward and the backward
through the activations of the frozen base, the LoRA factors' full training cost, causal attention)
over the chips' peak bfloat16 FLOP/s. It is an assumption, not a measurement.

Model FLOPs do not depend on how the chips split the work; the program does. Without ``--mesh`` the
plan compiles every ``fsdp`` x ``tp`` layout the model and batch allow and reports each one's peak
memory, XLA's FLOPs a chip (recomputation and replicated work included) and the bytes its
collectives produce; it projects each layout's step from those counts (the FLOPs at the assumed
efficiency, plus the collective bytes over the chips' interconnect, with no overlap assumed) and
picks the cheapest layout that fits. The run's hours are judged against what a session leaves for
training: ``--time-limit`` (default ``--hours``) less loading (assumed), compiling (this plan's own
compile time), the evals (their forward FLOPs at the assumed MFU) and the final save.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import re
import types
from dataclasses import dataclass
from typing import Any
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tzc_train import bases

# Public figures per chip (Google Cloud TPU documentation): HBM, peak bfloat16 FLOP/s, and
# inter-chip interconnect bandwidth in bytes/s (v4 2,400 Gbps; v5e 1,600; v5p 4,800; v6e 3,584).
CHIPS = {"v4": (32 * 2**30, 275e12), "v5e": (16 * 2**30, 197e12), "v5p": (95 * 2**30, 459e12),
         "v6e": (32 * 2**30, 918e12)}
ICI_BYTES_PER_S = {"v4": 300e9, "v5e": 200e9, "v5p": 600e9, "v6e": 448e9}
LOAD_SECONDS = 300.0  # assumed: reading the base's weights and placing them (not measured here)
MODELS = tuple(bases.MODELS)


class PlanError(ValueError):
    """The options cannot describe a run (a user's mistake)."""


class DoesNotFit(PlanError):
    """The plan's verdict: the run needs more memory than the chips have."""


@dataclass(frozen=True, kw_only=True)
class PlanConfig:
    """A training run as ``tzc-train`` would start it, and the hardware to plan it for."""

    data: str
    model: str = "gemma2-2b"
    topology: str = "v5e:2x4"
    batch_size: int = 8
    grad_accum: int = 1
    seq_len: int | None = None  # default: the build's
    lora_rank: int = 64
    lora_alpha: float = 64.0
    lora_targets: str | None = None  # default: tzc_train.train.LORA_TARGETS
    mesh: tuple[int, int] | None = None  # (fsdp, tp); default (chips / tp, tp), tp = gcd(chips, 4)
    remat: str = "block"
    attention: str = "splash"
    epochs: float = 1.0
    steps: int | None = None
    mfu: float = 0.35
    hours: float = 9.0
    time_limit: float | None = None  # seconds of the session for the whole command; default: hours
    eval_rows: int = 256  # tzc-train's --eval-rows: packed rows per eval
    eval_every: int | None = None  # tzc-train's --eval-every; default: about 20 evals a run
    # XLA's least optimisation effort: compiles about 4x faster; peak memory within a few percent
    # (0.79 against 0.82 GiB on a 2-layer check). The run itself compiles at the default effort.
    fast_compile: bool = False

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise PlanError(f"--model {self.model!r}: choose one of {', '.join(MODELS)}")
        if self.batch_size < 1 or self.grad_accum < 1 or self.lora_rank < 1:
            raise PlanError("--batch-size, --grad-accum and --lora-rank must be >= 1")
        if not 0 < self.mfu <= 1:
            raise PlanError(f"--mfu {self.mfu}: a fraction in (0, 1]")
        if not (self.hours > 0 and math.isfinite(self.hours)) or (
                self.steps is None and not (self.epochs > 0 and math.isfinite(self.epochs))):
            raise PlanError(f"--hours {self.hours} and --epochs {self.epochs}: must be finite numbers > 0")
        if self.topology.split(":")[0] not in CHIPS:
            raise PlanError(f"--topology {self.topology!r}: one of {', '.join(CHIPS)} then :AxB, e.g. v5e:2x4")


@dataclass(frozen=True, kw_only=True)
class Layout:
    """One ``fsdp`` x ``tp`` split of the chips, as compiled: per chip, per micro-batch."""

    mesh: dict[str, int]
    peak_bytes: int | None  # None: the compiler refused it (RESOURCE_EXHAUSTED)
    xla_flops: float = 0.0
    collective_bytes: int = 0  # bytes the program's collectives produce (all-gather, reduce-scatter…)
    seconds_per_step: float = math.inf  # projected from the counts (see the module docstring)

    @property
    def name(self) -> str:
        return "x".join(str(n) for n in self.mesh.values())


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What the compiler and the build's manifest say about one run. Bytes are per chip."""

    config: PlanConfig
    chips: int
    mesh: dict[str, int]
    seq_len: int
    hbm_bytes: int
    weights_bytes: int
    adapters_bytes: int
    optimizer_bytes: int
    activations_bytes: int  # XLA's temporaries: activations, gradients, workspace
    peak_bytes: int  # arguments + outputs - donated + temporaries
    xla_flops: float  # per chip, per micro-batch, from cost_analysis (Pallas kernels not counted)
    model_flops: float  # per optimizer step, all chips
    tokens_per_step: int
    fill: float
    steps_per_epoch: int
    steps: int
    peak_flops: float  # per chip
    layouts: tuple[Layout, ...] = ()  # every layout compiled; the chosen one is ``mesh``
    overheads: dict[str, float] = dataclasses.field(default_factory=dict)  # seconds: load, compile, evals, save

    @property
    def fits_memory(self) -> bool:
        return self.peak_bytes <= self.hbm_bytes

    @property
    def seconds_per_step(self) -> float:
        """The step at the assumed MFU of model FLOPs (the same for every layout)."""
        return self.model_flops / (self.chips * self.peak_flops * self.config.mfu)

    @property
    def hours(self) -> float:
        return self.steps * self.seconds_per_step / 3600

    @property
    def layout_hours(self) -> float:
        """The run at the chosen layout's own counts (its FLOPs a chip and its collectives)."""
        chosen = next((lay for lay in self.layouts if lay.mesh == self.mesh), None)
        return self.steps * chosen.seconds_per_step / 3600 if chosen else self.hours

    @property
    def available_hours(self) -> float:
        """What the session leaves for training steps: the time limit less the overheads."""
        limit = self.config.time_limit if self.config.time_limit is not None else self.config.hours * 3600
        return (limit - sum(self.overheads.values())) / 3600

    @property
    def training_hours(self) -> float:
        """The hours judged against :attr:`available_hours`: the longer of the two projections."""
        return max(self.hours, self.layout_hours)

    def report(self) -> str:
        gib = lambda n: f"{n / 2**30:6.2f} GiB"  # noqa: E731
        c = self.config
        mesh = "x".join(str(n) for n in self.mesh.values())
        lines = [
            f"plan: {c.model} on {c.topology} ({self.chips} chips, mesh fsdp x tp = {mesh}), batch {c.batch_size}"
            f" x grad-accum {c.grad_accum} x {self.seq_len} tokens, LoRA rank {c.lora_rank}, remat {c.remat},"
            f" {c.attention} attention",
            f"memory per chip: weights {gib(self.weights_bytes)}  adapters {gib(self.adapters_bytes)}  "
            f"optimizer {gib(self.optimizer_bytes)}  activations+temporaries {gib(self.activations_bytes)}",
            f"  peak {gib(self.peak_bytes)} of {gib(self.hbm_bytes)} HBM: "
            + ("fits" if self.fits_memory else "DOES NOT FIT"),
            f"FLOPs per step: {self.model_flops:.3e} model FLOPs ({self.tokens_per_step:,} tokens, "
            f"{self.fill:.1%} of them real); XLA counts {self.xla_flops:.3e} per chip per micro-batch "
            "(with recomputation, without the splash kernels)",
            f"steps: {self.steps_per_epoch:,} per epoch, {self.steps:,} in all",
            f"projected at {c.mfu:.0%} MFU (assumed; peak {self.peak_flops / 1e12:.0f} TFLOP/s a chip): "
            f"{self.seconds_per_step:.2f} s/step, {self.tokens_per_step / self.seconds_per_step:,.0f} tokens/s, "
            f"{self.hours:.2f} h; at the layout's own counts {self.layout_hours:.2f} h",
        ]
        if len(self.layouts) > 1:
            lines.append("layouts (fsdp x tp: peak a chip, XLA FLOPs a chip a micro-batch, collective output, "
                         "projected step):")
            for lay in self.layouts:
                chosen = (f"  <- chosen: the cheapest that fits (tzc-train --mesh {lay.name})"
                          if lay.mesh == self.mesh else "")
                if lay.peak_bytes is None:
                    lines.append(f"  {lay.name:>5}  does not compile: over the chips' memory")
                    continue
                fits = "fits" if lay.peak_bytes <= self.hbm_bytes else "DOES NOT FIT"
                lines.append(f"  {lay.name:>5}  {gib(lay.peak_bytes)} ({fits})  {lay.xla_flops:.3e}  "
                             f"{gib(lay.collective_bytes)}  {lay.seconds_per_step:.2f} s{chosen}")
        spent = ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in self.overheads.items())
        verdict = ("fits" if self.training_hours <= self.available_hours else
                   f"DOES NOT FIT ({math.ceil(self.training_hours / max(self.available_hours, 1e-9))} sessions)")
        lines.append(f"session: {self.available_hours:.2f} h for training ({spent} kept from the time limit); "
                     f"the run needs {self.training_hours:.2f} h: {verdict}")
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("config", "layouts")}
        return {**fields, "config": dataclasses.asdict(self.config), "seconds_per_step": self.seconds_per_step,
                "hours": self.hours, "layout_hours": self.layout_hours, "available_hours": self.available_hours,
                "training_hours": self.training_hours, "fits_memory": self.fits_memory,
                "layouts": [{**dataclasses.asdict(lay), "seconds_per_step": lay.seconds_per_step}
                            for lay in self.layouts]}


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

    from tzc_train.model import prepare
    from tzc_train.train import LORA_TARGETS

    base = bases.base(config.model)
    if base.tiny:
        model_config, dtype = bases.tiny_config(base.family, vocab_size), jnp.float32
    else:
        model_config, dtype = bases.real_config(config.model), jnp.bfloat16
    provider = qwix.LoraProvider(module_path=config.lora_targets or LORA_TARGETS, rank=config.lora_rank,
                                 alpha=config.lora_alpha)
    # As train.make_trainer builds it; accumulation happens inside the step (no optax.MultiSteps).
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


def model_flops(model_config: Any, adapter_elements: int, rows: int, seq_len: int) -> float:
    """Model FLOPs of one optimizer step over ``rows`` packed rows of ``seq_len`` tokens.

    Frozen base: forward (2 per weight per token) and the backward through the activations (2 more),
    no weight gradients; the adapters: forward, activation and weight gradients (6 per element per
    token); attention: ``QK^T`` and ``PV`` over the causal pairs (within the window on local layers),
    forward plus a backward of twice the forward. Recomputation (remat) is not model FLOPs.
    """
    c = model_config
    per_layer = c.embed_dim * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads) + 3 * c.embed_dim * c.hidden_dim
    dense = c.num_layers * per_layer + c.num_embed * c.embed_dim  # + the loss's vocabulary projection
    tokens = rows * seq_len

    def pairs(window: int | None) -> int:  # attended (query, key) pairs in one row
        w = seq_len if window is None else min(window, seq_len)
        return w * (w + 1) // 2 + (seq_len - w) * w

    attention = sum(pairs(c.sliding_window_size if t == t.LOCAL_SLIDING else None) for t in bases.attention_types(c))
    return float(tokens * (4 * dense + 6 * adapter_elements) + rows * 3 * 4 * c.num_heads * c.head_dim * attention)


def step_owner(input_fn: Any, loss_fn: Any, grad_accum: int) -> Any:
    """What :class:`tzc_train.trainer.Trainer`'s step reads of its trainer (the input and loss functions
    train.py gives it, the accumulation count), without building a trainer (checkpoints, logs)."""
    from tzc_train.trainer import Trainer

    owner = types.SimpleNamespace(gen_model_input_fn=input_fn, loss_fn=loss_fn, grad_accum=grad_accum)
    owner._summed_loss = functools.partial(Trainer._summed_loss, owner)
    return owner


def plan(config: PlanConfig) -> Plan:
    """Compile the run's train step for ``config.topology`` and size it: on ``config.mesh``, or on every
    layout the model and batch allow, choosing the cheapest that fits. Raises :class:`PlanError` if none
    fits the chips' memory (the hours are judged by the caller: :attr:`Plan.training_hours`)."""
    import tzc_data

    try:
        manifest = tzc_data.read_manifest(config.data)
    except (OSError, ValueError) as err:
        raise PlanError(f"--data {config.data}: {err}") from None
    try:
        bases.check_tokenizer(config.model, manifest["tokenizer"], config.data)
    except ValueError as err:
        raise PlanError(str(err)) from None
    seq_len = config.seq_len or manifest["config"]["seq_len"]
    kind = config.topology.split(":")[0]
    hbm, peak = CHIPS[kind]
    chips = topology_mesh(config.topology, None).devices.size  # PlanError for a topology it cannot describe
    shapes = [config.mesh] if config.mesh else layout_candidates(config, manifest["tokenizer"]["vocab_size"], chips)
    compiled: dict[tuple[int, int], tuple[Layout, dict[str, Any] | None]] = {}
    for shape in shapes:
        mesh = topology_mesh(config.topology, shape)
        sizes = dict(zip(mesh.axis_names, mesh.devices.shape))
        if config.batch_size % sizes["fsdp"]:
            raise PlanError(f"--batch-size {config.batch_size} does not divide over the fsdp axis ({sizes['fsdp']}): "
                            "tunix would then replicate the batch on every chip")
        try:
            parts = compile_step(config, mesh, manifest["tokenizer"]["vocab_size"], seq_len)
        except DoesNotFit as refused:
            if len(shapes) == 1:
                raise
            compiled[shape] = (Layout(mesh=sizes, peak_bytes=None), {"refused": str(refused)})
            continue
        per_step = config.grad_accum * (parts["xla_flops"] / (peak * config.mfu)
                                        + parts["collective_bytes"] / ICI_BYTES_PER_S[kind])
        compiled[shape] = (Layout(mesh=sizes, peak_bytes=parts["peak_bytes"], xla_flops=parts["xla_flops"],
                                  collective_bytes=parts["collective_bytes"], seconds_per_step=per_step), parts)
    layouts = tuple(layout for layout, _ in compiled.values())
    fitting = [shape for shape, (lay, _) in compiled.items() if lay.peak_bytes is not None and lay.peak_bytes <= hbm]
    if not fitting:
        smallest = min((lay.peak_bytes for lay in layouts if lay.peak_bytes is not None), default=None)
        needed = f"{smallest / 2**30:.2f} GiB a chip needed at best" if smallest else "no layout compiles"
        raise DoesNotFit(f"does not fit: {needed}, {hbm / 2**30:.2f} GiB available ({config.topology}, batch "
                         f"{config.batch_size} x {seq_len}, layouts {', '.join(lay.name for lay in layouts)}); "
                         f"lower --batch-size (raise --grad-accum){_remat_advice(config.remat)}")
    chosen = min(fitting, key=lambda shape: compiled[shape][0].seconds_per_step)
    layout, parts = compiled[chosen]
    return _the_plan(config, manifest, seq_len, layout, parts, layouts, hbm, peak)


def _the_plan(config: PlanConfig, manifest: dict[str, Any], seq_len: int, layout: Layout, parts: dict[str, Any],
              layouts: tuple[Layout, ...], hbm: int, peak: float) -> Plan:
    """The :class:`Plan` of the chosen layout: its memory, the run's steps, the session's overheads."""
    train_split = manifest["packing"]["by_split"]["train"]
    examples_per_step = config.batch_size * config.grad_accum
    steps_per_epoch = max(1, train_split["rows"] // examples_per_step)
    steps = config.steps or max(1, int(config.epochs * train_split["rows"] / examples_per_step))
    chips = math.prod(layout.mesh.values())
    step_flops = model_flops(parts["model_config"], parts["adapter_elements"], examples_per_step, seq_len)
    return Plan(config=config, chips=chips, mesh=layout.mesh, seq_len=seq_len, hbm_bytes=hbm,
                weights_bytes=parts["weights_bytes"], adapters_bytes=parts["adapters_bytes"],
                optimizer_bytes=parts["optimizer_bytes"], activations_bytes=parts["temp_bytes"],
                peak_bytes=parts["peak_bytes"], xla_flops=parts["xla_flops"], model_flops=step_flops,
                tokens_per_step=examples_per_step * seq_len, fill=float(manifest["packing"].get("fill", 1.0)),
                steps_per_epoch=steps_per_epoch, steps=steps, peak_flops=peak, layouts=layouts,
                overheads=session_overheads(config, parts, steps, seq_len, chips * peak))


def session_overheads(config: PlanConfig, parts: dict[str, Any], steps: int, seq_len: int,
                      flops_per_s: float) -> dict[str, float]:
    """Seconds of the session spent on anything but training steps: loading (assumed), compiling (this
    plan's compile of the step), the evals (forward FLOPs of ``eval_rows`` rows at the assumed MFU, as
    often as ``tzc-train`` runs them) and the final save (``tzc_train.session.SAVE_RESERVE_S``)."""
    from tzc_train.session import SAVE_RESERVE_S

    every = config.eval_every or max(50, math.ceil(steps / 20))  # tzc_train.train.eval_interval
    forward = model_flops(parts["model_config"], parts["adapter_elements"], config.eval_rows, seq_len) / 2
    evals = (steps // every + 1) * forward / (flops_per_s * config.mfu) if config.eval_rows else 0.0
    return {"loading": LOAD_SECONDS, "compiling": parts["compile_seconds"], "evals": evals, "save": SAVE_RESERVE_S}


def layout_candidates(config: PlanConfig, vocab_size: int, chips: int) -> list[tuple[int, int]]:
    """The (fsdp, tp) splits of the topology's chips that the model's query heads, key/value heads (one
    head is replicated) and MLP width divide by ``tp`` and the batch divides by ``fsdp``, widest
    ``fsdp`` first."""
    base = bases.base(config.model)
    model = bases.tiny_config(base.family, vocab_size) if base.tiny else bases.real_config(config.model)
    shapes = [(chips // tp, tp) for tp in range(1, chips + 1) if chips % tp == 0
              and model.num_heads % tp == 0 and (model.num_kv_heads % tp == 0 or model.num_kv_heads == 1)
              and model.hidden_dim % tp == 0 and config.batch_size % (chips // tp) == 0]
    if not shapes:
        raise PlanError(f"--batch-size {config.batch_size} does not divide over the fsdp axis of any fsdp x tp split "
                        f"of {config.topology}: give a batch size the chips divide, or --mesh")
    return shapes


def compile_step(config: PlanConfig, mesh: jax.sharding.Mesh, vocab_size: int, seq_len: int) -> dict[str, Any]:
    """Lower and compile the train step on ``mesh``; its memory, counts and compile time. Raises
    :class:`DoesNotFit` when the TPU compiler finds it over the chips' memory."""
    import time

    from flax import nnx

    from tzc_train.model import packed_inputs, packed_loss
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
                            f"lower --batch-size (raise --grad-accum){_remat_advice(config.remat)}") from None
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


def _remat_advice(remat: str) -> str:
    """What else to try, for a plan that does not fit: ``block`` needs the least memory of the three
    (README, "Training at the entry's scale"), so only the others are told to use it."""
    return "" if remat == "block" else " or use --remat block"


__all__ = ["CHIPS", "DoesNotFit", "Layout", "Plan", "PlanConfig", "PlanError", "collective_bytes", "layout_candidates",
           "model_flops", "plan", "session_overheads", "topology_mesh"]
