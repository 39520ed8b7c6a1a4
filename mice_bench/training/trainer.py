"""One training run on a prepared model and data: :class:`Trainer` (step / validate /
checkpoint / run).

* AdamW (no weight decay on biases and LayerNorm weights), linear warm-up then linear decay
  to 0 (``schedule="linear"``, Hugging Face's ``get_linear_schedule_with_warmup``) or constant;
  gradient accumulation (each micro-batch's loss divided by ``grad_accum``, so the gradient
  applied is the gradient of the whole batch's mean loss); gradient-norm clipping of that
  gradient; bf16/fp16 autocast where the device supports it (scores and losses in fp32; fp16
  with a gradient scaler, whose gradients are unscaled before clipping).
* Batches are a pure function of ``(seed, step)`` (:func:`~.data.sample_groups`), dropout is
  off unless ``dropout`` asks for it (then its masks come from the saved RNG states), and
  every checkpoint holds the weights, the optimizer, the scheduler and the RNG states, so a
  run resumed from a checkpoint ends with the same weights as an uninterrupted one (CPU,
  same seed), with or without dropout.
* Data-parallel under ``torchrun`` (DistributedDataParallel): each rank takes its share of the
  same global batch, so the result equals one process with that batch; only rank 0 validates
  and writes.
* **Non-finite values stop the run.** A step whose loss or gradient norm is not finite, or
  after which a weight is not finite, raises :class:`TrainingDiverged` before anything of it
  is validated, checkpointed or written as the output; the log ends with status
  ``diverged`` and what was non-finite. With fp16 (gradient scaler) an overflowing step is
  what loss scaling expects: the scaler skips it and lowers its scale; skipped steps are
  counted (log ``skipped_steps``), and the run stops after :data:`MAX_SKIPPED_IN_A_ROW` in a
  row.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from .config import TrainConfig
from .data import TrainingData, sample_groups
from .losses import compute_loss
from .state import (CKPT_VERSION, checkpoint_path, list_checkpoints, rng_state, set_rng_state,
                    write_checkpoint)
from .validation import validate_model

SCHEMA_KIND = "training"
#: fp16: consecutive steps the gradient scaler may skip before the run counts as diverged
MAX_SKIPPED_IN_A_ROW = 25


class TrainingDiverged(RuntimeError):
    """A loss, gradient or weight became non-finite: the run stopped, nothing of that step
    was saved (the message names the step, what was non-finite and the log)."""


# --------------------------------------------------------------------------- reporting
class TrainReporter:
    """Progress callbacks (no-op); the CLI draws a Rich bar, tests may stop a run."""

    def start(self, total: int, done: int, info: dict) -> None: ...

    def step(self, step: int, loss: float, pairs_per_s: float, lr: float) -> None: ...

    def validation(self, step: int, metrics: dict, best: bool) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


@dataclass
class TrainResult:
    """What a run produced."""

    output: Path
    log_path: Path | None
    steps: int
    selected: str                      # "best@<step>" or "last"
    best_step: int | None
    best_metrics: dict | None
    final_loss: float | None
    pairs_per_s: float | None
    loss_curve: list[dict] = field(default_factory=list)
    validation_curve: list[dict] = field(default_factory=list)
    world_size: int = 1
    skipped_steps: int = 0


@dataclass
class StepStats:
    """One optimizer step: the mean loss over the global batch, the gradient norm before
    clipping (unscaled), the learning rate used, whether the scaler skipped it."""

    loss: float
    grad_norm: float
    lr: float
    skipped: bool = False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--precision`` on ``device`` (None: fp32)."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision fp16 needs a CUDA device (on CPU use bf16 or fp32)")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError("--precision bf16: this GPU has no bf16 support; use fp16")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the learning rate at optimizer step ``step`` (0-based), as Hugging
    Face's ``get_linear_schedule_with_warmup`` / ``..._constant_schedule_with_warmup``."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))


def trainable_parameters(model, executor: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters the variant uses, found by one probe pass (the others are frozen)."""
    model.requires_grad_(True)
    model.train()
    probe = model(["probe query"], ["probe document"], executor=executor)
    probe.sum().backward()
    for p in model.parameters():
        if p.grad is None:
            p.requires_grad_(False)
        p.grad = None
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def provenance(cfg: TrainConfig, log: dict, done: int, fingerprint: str) -> dict:
    """What ``mice_bench.json`` records about the training (``trained``)."""
    last = log["loss"][-1]["loss"] if log.get("loss") else None
    return {"steps": int(done), "loss": last, "loss_fn": cfg.loss, "data": cfg.data,
            "data_fingerprint": fingerprint, "from": cfg.model, "seed": cfg.seed}


class Trainer:
    """Train ``model`` on ``data`` as ``cfg`` says (see the module docstring).

    ``state`` is a checkpoint's content (:func:`~.state.read_checkpoint`) to continue from;
    ``env`` / ``device`` come from :func:`mice_bench.distributed.session`. The optimizer,
    scheduler and gradient scaler are attributes (``optimizer``, ``scheduler``, ``scaler``)
    built here; :meth:`run` trains to ``cfg.steps`` and writes the output.
    """

    def __init__(self, cfg: TrainConfig, model, data: TrainingData, *, env, device: torch.device,
                 reporter: TrainReporter | None = None, state: dict | None = None):
        self.cfg, self.model, self.data, self.env, self.device = cfg, model, data, env, device
        self.rep = reporter or TrainReporter()
        self.out, self.work = Path(cfg.output), cfg.work_dir
        self.amp = autocast_dtype(cfg.precision, device)
        if cfg.batch_size % (env.world * cfg.grad_accum):
            raise UsageError(f"--batch-size {cfg.batch_size} must be a multiple of ranks x "
                             f"--grad-accum = {env.world} x {cfg.grad_accum}")
        self.per_rank = cfg.batch_size // env.world
        self.group_size = cfg.effective_group_size
        self.params = trainable_parameters(model, cfg.executor)
        decay = [p for n, p in self.params if p.ndim >= 2]
        no_decay = [p for n, p in self.params if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, eps=cfg.adam_eps)
        warm, total = cfg.effective_warmup, cfg.steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warm, total, cfg.schedule))
        self.scaler = torch.amp.GradScaler(device.type) if self.amp == torch.float16 else None
        self.log: dict[str, Any] = {"loss": [], "validation": [], "best": None,
                                    "step_times": [], "skipped_steps": 0,
                                    "pending": [0.0, 0]}  # loss sum and count since last entry
        self.start = 0
        if state is not None:
            model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            self.log = {"skipped_steps": 0, **state["log"]}
            self.start = int(state["step"])
        self.net: torch.nn.Module = model
        if env.active:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        from ..naming import slug

        self.log_path = Path(cfg.log_dir) / f"{slug(self.out.name)}.json" if env.main else None
        self.info = {"variant": str(model.spec),
                     "trainable_params": sum(p.numel() for _, p in self.params),
                     "world_size": env.world, "device": str(device),
                     "precision": {None: "fp32", torch.bfloat16: "bf16",
                                   torch.float16: "fp16"}[self.amp],
                     "data": data.summary(), "data_fingerprint": data.fingerprint()}
        self._skipped_in_a_row = 0

    # ------------------------------------------------------------------ one step
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp is not None \
            else contextlib.nullcontext()

    def _grad_norm(self) -> torch.Tensor:
        """The total gradient norm (clipping it to ``grad_clip`` when that is set)."""
        ps = [p for _, p in self.params if p.grad is not None]
        if self.cfg.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(ps, self.cfg.grad_clip)
        if not ps:
            return torch.zeros((), device=self.device)
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float())
                                                     for p in ps]))

    def step(self, step: int) -> StepStats:
        """Optimizer step ``step`` (0-based): the forward and backward passes of every
        accumulation micro-batch of this rank's share, unscale, clip, AdamW, schedule.
        Raises :class:`TrainingDiverged` (nothing applied) on a non-finite loss or gradient
        without a scaler."""
        cfg, G = self.cfg, self.group_size
        groups = sample_groups(self.data, step, cfg.batch_size, G, cfg.seed)
        mine = groups[self.env.rank * self.per_rank:(self.env.rank + 1) * self.per_rank]
        mb = self.per_rank // cfg.grad_accum
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), dtype=torch.float32, device=self.device)
        for a in range(cfg.grad_accum):
            part = mine[a * mb:(a + 1) * mb]
            sync = contextlib.nullcontext() if (not self.env.active or a == cfg.grad_accum - 1) \
                else self.net.no_sync()
            with sync:
                qs = [g.query for g in part for _ in range(G)]
                ds = [d for g in part for d in g.docs]
                with self._autocast():
                    scores = self.net(qs, ds, executor=cfg.executor)
                scores = scores.float().view(len(part), G)
                teach = torch.tensor([g.teacher for g in part], dtype=torch.float32,
                                     device=self.device) if cfg.loss == "marginmse" else None
                loss = compute_loss(cfg.loss, scores, teach) / cfg.grad_accum
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
            step_loss += loss.detach()
        if self.env.active:
            import torch.distributed as dist

            dist.all_reduce(step_loss)
            step_loss /= self.env.world
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = float(self._grad_norm())
        lv, lr_now = float(step_loss), self.optimizer.param_groups[0]["lr"]
        finite = torch.isfinite(torch.tensor([lv, norm])).all().item()
        if self.scaler is None and not finite:
            what = "loss" if not torch.isfinite(torch.tensor(lv)) else "gradient norm"
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(f"step {step + 1}: the {what} is not finite (loss {lv}, "
                                   f"gradient norm {norm}, lr {lr_now:g})")
        skipped = False
        if self.scaler is not None:
            before = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            skipped = not finite or self.scaler.get_scale() < before
        else:
            self.optimizer.step()
        self.scheduler.step()
        return StepStats(loss=lv, grad_norm=norm, lr=lr_now, skipped=skipped)

    def check_weights(self, done: int) -> None:
        """TrainingDiverged when a trainable weight is not finite after step ``done``."""
        ps = [p for _, p in self.params]
        if ps and not bool(torch.stack([torch.isfinite(p).all() for p in ps]).all()):
            bad = next(n for n, p in self.params if not torch.isfinite(p).all())
            raise TrainingDiverged(f"step {done}: weights are not finite after the optimizer "
                                   f"step (e.g. {bad}; lr {self.cfg.lr:g})")

    # ------------------------------------------------------------------ validate, checkpoint
    def validate(self, done: int) -> None:
        """Validate on the held-out queries (rank 0); keep the best model in ``best/``."""
        if not self.env.main or not self.data.val_queries:
            return
        cfg, log = self.cfg, self.log
        self.model.eval()
        m = validate_model(self.model, self.data, cfg, self.amp)
        self.model.train()
        value = m[cfg.val_metric]
        best = log["best"] is None or value > log["best"]["value"]
        log["validation"].append({"step": done, **m})
        if best:
            log["best"] = {"step": done, "metric": cfg.val_metric, "value": value, "metrics": m}
            self.model.save_pretrained(self.work / "best", trained=provenance(
                cfg, log, done, self.info["data_fingerprint"]))
        self.rep.validation(done, m, best)

    def checkpoint(self, done: int) -> None:
        """Write ``checkpoint-<done>.pt`` (checksummed; the last ``keep_checkpoints`` kept)
        and the log (rank 0)."""
        if not self.env.main:
            return
        cfg = self.cfg
        if cfg.save_checkpoints:   # a study's runs: the output and the log suffice
            st = {"version": CKPT_VERSION, "step": done, "fingerprint": cfg.fingerprint(),
                  "config": {"trajectory": cfg.trajectory(), "full": cfg.as_dict()},
                  "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                  "scheduler": self.scheduler.state_dict(),
                  "scaler": self.scaler.state_dict() if self.scaler else None,
                  "rng": rng_state(), "log": self.log}
            write_checkpoint(checkpoint_path(self.work, done), st)
            for old in list_checkpoints(self.work)[:-cfg.keep_checkpoints]:
                old.unlink(missing_ok=True)
        self.write_log("running")

    def write_log(self, status: str, **extra: Any) -> None:
        if self.log_path is not None:
            write_log(self.log_path, self.cfg, self.info, self.log, status, self.model,
                      self.out, **extra)

    # ------------------------------------------------------------------ the run
    def _record(self, done: int, st: StepStats, dt: float) -> float:
        cfg, log = self.cfg, self.log
        pps = cfg.batch_size * self.group_size / dt if dt > 0 else float("nan")
        log["step_times"].append(round(dt, 6))
        del log["step_times"][:-1000]  # the last 1,000 step times (throughput)
        if st.skipped:
            log["skipped_steps"] += 1
            self._skipped_in_a_row += 1
            self.rep.message(f"step {done}: gradient overflow, step skipped by the fp16 "
                             f"gradient scaler ({log['skipped_steps']} so far)")
            if self._skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
                raise TrainingDiverged(f"step {done}: {self._skipped_in_a_row} steps in a row "
                                       "skipped by the fp16 gradient scaler (overflow)")
        else:
            self._skipped_in_a_row = 0
            log["pending"] = [log["pending"][0] + st.loss, log["pending"][1] + 1]
        if done % cfg.log_every == 0 or done == cfg.steps:
            acc, n = log["pending"]
            log["loss"].append({"step": done, "loss": acc / n if n else None, "lr": st.lr,
                                "pairs_per_s": pps})
            log["pending"] = [0.0, 0]
        return pps

    def run(self) -> TrainResult:
        """Train from the start (or the checkpoint) to ``cfg.steps``; write the output."""
        cfg, env = self.cfg, self.env
        if env.main:
            if cfg.overwrite and self.start == 0 and self.work.exists():
                shutil.rmtree(self.work)  # the earlier run's checkpoints and best model
            self.work.mkdir(parents=True, exist_ok=True)
        self.rep.start(cfg.steps, self.start, self.info)
        for step in range(self.start, cfg.steps):
            done = step + 1
            t0 = time.perf_counter()
            try:
                st = self.step(step)
                self.check_weights(done)
                pps = self._record(done, st, time.perf_counter() - t0)
            except TrainingDiverged as e:
                self.write_log("diverged", diverged={"step": done, "reason": str(e)})
                where = f"; log {self.log_path}" if self.log_path else ""
                raise TrainingDiverged(f"training stopped at {e}; no checkpoint or output was "
                                       f"written for it{where}") from None
            self.rep.step(done, st.loss, pps, st.lr)
            validated = False
            if (cfg.val_every and done % cfg.val_every == 0) or done == cfg.steps:
                self.validate(done)
                validated = True
            if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) \
                    or done == cfg.steps or (validated and self.data.val_queries):
                self.checkpoint(done)
            env.barrier()
        return self.finish()

    def finish(self) -> TrainResult:
        """Install the output (the best validation model, else the last weights)."""
        cfg, env, log = self.cfg, self.env, self.log
        self.model.eval()
        self.model.requires_grad_(False)
        selected = "last"
        if env.main:
            if log["best"] is not None and (self.work / "best").is_dir():
                selected = f"best@{log['best']['step']}"
                install(self.work / "best", self.out)
            else:
                self.model.save_pretrained(self.out, trained=provenance(
                    cfg, log, cfg.steps, self.info["data_fingerprint"]))
            from ..results import atomic_write_json

            atomic_write_json(self.out / "training.json", {
                "selected": selected, "log": str(self.log_path) if self.log_path else None,
                "config": cfg.as_dict(), "best": log["best"],
                "data_fingerprint": self.info["data_fingerprint"]})
            self.write_log("finished")
        env.barrier()
        times = log["step_times"][3:] or log["step_times"]
        pps = cfg.batch_size * self.group_size / statistics.median(times) if times else None
        return TrainResult(output=self.out, log_path=self.log_path, steps=cfg.steps,
                           selected=selected,
                           best_step=log["best"]["step"] if log["best"] else None,
                           best_metrics=log["best"]["metrics"] if log["best"] else None,
                           final_loss=log["loss"][-1]["loss"] if log["loss"] else None,
                           pairs_per_s=pps, loss_curve=list(log["loss"]),
                           validation_curve=list(log["validation"]), world_size=env.world,
                           skipped_steps=log.get("skipped_steps", 0))


# --------------------------------------------------------------------------- files
def install(src: Path, dst: Path) -> None:
    """Copy the checkpoint directory ``src`` into ``dst`` by the rule of
    :meth:`~mice_bench.model.InteractionModel.save_pretrained` (a new or empty folder, or a
    mice-bench checkpoint whose files are replaced; the user's other files are kept), each
    file atomically."""
    from ..checkpoint_files.folder import staged_checkpoint

    with staged_checkpoint(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


def write_log(path: Path, cfg: TrainConfig, info: dict, log: dict, status: str, model,
              out: Path, **extra: Any) -> None:
    """The training log (schema ``mice-bench/training``), written atomically."""
    from ..results import atomic_write_json, envelope, environment

    times = log["step_times"][3:] or log["step_times"]
    G = cfg.effective_group_size
    med = statistics.median(times) if times else None
    throughput = {"pairs_per_step": cfg.batch_size * G,
                  "median_step_s": med,
                  "pairs_per_s": cfg.batch_size * G / med if med else None,
                  "steps_timed": len(times)}
    data = envelope(SCHEMA_KIND, cfg.as_dict(),
                    environment(device=info["device"], dtype=info["precision"]),
                    status=status, model={"init": cfg.model, **model.info,
                                          "trainable_params": info["trainable_params"]},
                    data=info["data"], data_fingerprint=info["data_fingerprint"],
                    world_size=info["world_size"], output=str(out),
                    curves={"loss": log["loss"], "validation": log["validation"]},
                    best=log["best"], throughput=throughput,
                    skipped_steps=log.get("skipped_steps", 0), **extra)
    atomic_write_json(path, data)


__all__ = ["Trainer", "TrainReporter", "TrainResult", "StepStats", "TrainingDiverged",
           "autocast_dtype", "lr_factor", "trainable_parameters", "write_log", "install",
           "MAX_SKIPPED_IN_A_ROW"]
