"""``tzc-train plan``'s answer: the layout to run, the hours it takes, and whether a session holds them.

Model FLOPs do not depend on how the chips split the work; the program does. Without ``--mesh`` the
plan compiles every ``fsdp`` x ``tp`` layout the model and batch allow
(:func:`tzc_train.plan.compile.compile_step`) and reports each one's peak memory, XLA's FLOPs a chip
(recomputation and replicated work included) and the bytes its collectives produce; it projects each
layout's step from those counts (the FLOPs at the assumed efficiency, plus the collective bytes over
the chips' interconnect, with no overlap assumed) and picks the cheapest layout that fits.

The projected time assumes a stated MFU (``--mfu``): model FLOPs per step (forward and the backward
through the activations of the frozen base, the LoRA factors' full training cost, causal attention)
over the chips' peak bfloat16 FLOP/s. It is an assumption, not a measurement. The run's hours are
judged against what a session leaves for training: ``--time-limit`` (default ``--hours``) less
loading (assumed), compiling (this plan's own compile time), the evals (their forward FLOPs at the
assumed MFU) and the final save.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from tzc_train.model import bases
from tzc_train.plan.compile import compile_step, topology_mesh
from tzc_train.plan.config import CHIPS, ICI_BYTES_PER_S, LOAD_SECONDS, DoesNotFit, PlanConfig, PlanError, remat_advice


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
                         f"lower --batch-size (raise --grad-accum){remat_advice(config.remat)}")
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

    every = config.eval_every or max(50, math.ceil(steps / 20))  # tzc_train.trainer.eval_interval
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


__all__ = ["Layout", "Plan", "layout_candidates", "model_flops", "plan", "session_overheads"]
