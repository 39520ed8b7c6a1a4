"""The training loop: ``train(config) -> TrainResult``.

* AdamW (no weight decay on biases and LayerNorm weights), linear warm-up then linear decay
  to 0 (``schedule="linear"``, Hugging Face's ``get_linear_schedule_with_warmup``) or constant;
  gradient accumulation; gradient-norm clipping; bf16/fp16 autocast where the device supports
  it (scores and losses in fp32; fp16 with a gradient scaler).
* Batches are a pure function of ``(seed, step)`` (:func:`~.data.sample_groups`), dropout is
  off unless ``dropout`` asks for it (then its masks come from the saved RNG states), and
  every checkpoint holds the weights, the optimizer, the scheduler and the RNG states, so a
  run resumed from a checkpoint ends with the same weights as an uninterrupted one (CPU,
  same seed), with or without dropout.
* Data-parallel when ``torch.distributed`` is initialised or ``WORLD_SIZE > 1`` (``torchrun``):
  DistributedDataParallel (NCCL on GPUs, Gloo on CPUs); each rank takes its share of the same
  global batch, so the result equals one process with that batch; only rank 0 validates and
  writes.
* Validation every ``val_every`` steps and at the end on held-out queries (nDCG@10 and RR@10
  of the first-stage candidates re-ranked); the best model is kept (``<output>.train/best``)
  and becomes the output.

Files: ``<output>/`` (a :meth:`MiceModel.save_pretrained` checkpoint + ``training.json``),
``<output>.train/`` (``checkpoint-<step>.pt``, ``best/``), and the JSON training log
``<log_dir>/<output name>.json`` (schema ``mice-bench/training``).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..distributed import session
from ..errors import UsageError
from .config import TrainConfig
from .data import TrainingData, load_training_data, sample_groups, teacher_scores
from .losses import compute_loss

SCHEMA_KIND = "training"
CKPT_VERSION = 1


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


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
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


# --------------------------------------------------------------------------- schedule
def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the learning rate at optimizer step ``step`` (0-based), as Hugging
    Face's ``get_linear_schedule_with_warmup`` / ``..._constant_schedule_with_warmup``."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))


# --------------------------------------------------------------------------- helpers
def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "-" for c in text).strip("-") or "run"


def _rng_state() -> dict:
    import numpy as np

    st = {"torch": torch.get_rng_state(), "python": random.getstate(),
          "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    import numpy as np

    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _seed_all(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _checkpoints(work: Path) -> list[Path]:
    return sorted(work.glob("checkpoint-*.pt"))


def load_model(cfg: TrainConfig, device: torch.device | str = "cpu"):
    """The model to train: ``cfg.model`` (hub id, path, mice-bench checkpoint, architecture
    name) as ``cfg.variant`` (UsageError/SpecError when it cannot hold it)."""
    from ..model import MiceModel

    model = MiceModel.from_pretrained(cfg.model, variant=cfg.variant, device=device,
                                      seed=cfg.seed, query_max_tokens=cfg.query_max_tokens,
                                      doc_max_tokens=cfg.doc_max_tokens)
    model.dropout = cfg.dropout          # train-mode dropout (opt-in; --recipe paper sets it)
    return model


def _provenance(cfg, log: dict, done: int, fingerprint) -> dict:
    """What ``mice_bench.json`` records about the training (``trained``)."""
    last = log["loss"][-1]["loss"] if log.get("loss") else None
    return {"steps": int(done), "loss": last, "loss_fn": cfg.loss, "data": cfg.data,
            "data_fingerprint": fingerprint, "from": cfg.model, "seed": cfg.seed}


def load_teacher(cfg: TrainConfig, device: torch.device | str = "cpu"):
    from ..model import MiceModel

    if cfg.teacher is None:
        return None
    try:
        return MiceModel.from_pretrained(cfg.teacher, variant=cfg.teacher_variant,
                                         device=device, query_max_tokens=cfg.query_max_tokens,
                                         doc_max_tokens=cfg.doc_max_tokens)
    except UsageError as e:
        raise UsageError(f"--teacher {cfg.teacher}: {e}") from None


def prepare_data(cfg: TrainConfig, teacher=None, reporter: TrainReporter | None = None
                 ) -> TrainingData:
    """Load the data of ``cfg`` and, for MarginMSE without teacher scores in the data, score
    it with ``teacher`` (cached)."""
    rep = reporter or TrainReporter()
    data = load_training_data(cfg.data, first_stage=cfg.first_stage, docs=cfg.docs,
                              negatives_depth=cfg.negatives_depth, val_queries=cfg.val_queries,
                              val_depth=cfg.val_depth, limit_queries=cfg.limit_queries,
                              cache_dir=cfg.cache_path(), message=rep.message)
    if teacher is not None:
        rep.message(f"teacher scores ({cfg.teacher}) for "
                    f"{sum(len(data.positives[q]) + len(data.negatives[q]) for q in data.queries)}"
                    " pairs (cached once computed) ...")
        data.teacher = teacher_scores(data, teacher, cfg.teacher, cfg.cache_path(),
                                      batch_size=cfg.eval_batch_size)
        data.check()
    if cfg.loss == "marginmse" and data.teacher is None:
        raise UsageError("--loss marginmse needs teacher scores: give --teacher MODEL or a "
                         "JSONL whose lines have 'scores'")
    return data


# --------------------------------------------------------------------------- validation
def validate_model(model, data: TrainingData, cfg: TrainConfig,
                   autocast: torch.dtype | None = None) -> dict[str, float]:
    """nDCG@10 and RR@10 of the held-out queries' candidates re-ranked by ``model``."""
    from ..effectiveness.metrics import aggregate, parse_measures, per_query

    ex = model.executor(cfg.executor)
    qs, ds, keys = [], [], []
    for q, cands in data.val_candidates.items():
        for d in cands:
            qs.append(data.val_queries[q])
            ds.append(data.texts[d])
            keys.append((q, d))
    dev = model.backbone.device
    ctx = torch.autocast(dev.type, dtype=autocast) if autocast is not None \
        else contextlib.nullcontext()
    with ctx:
        scores = ex.score_pairs(qs, ds, batch_size=cfg.eval_batch_size).tolist() if qs else []
    run: dict[str, dict[str, float]] = {q: {} for q in data.val_queries}
    for (q, d), s in zip(keys, scores):
        run[q][d] = float(s)
    ms = parse_measures(["nDCG@10", "RR@10"])
    return aggregate(per_query(data.val_qrels, run, ms))


def preflight(cfg: TrainConfig) -> dict | None:
    """Check the output before anything is loaded or written: refuse to overwrite an earlier
    run (unless ``overwrite``); with ``resume``, the latest checkpoint (None when the run died
    before its first one), refused when it was written with a different configuration."""
    out, work = Path(cfg.output), cfg.work_dir
    ckpts = _checkpoints(work) if work.is_dir() else []
    if not cfg.resume and not cfg.overwrite and (out.exists() or work.exists()):
        raise UsageError(f"{out if out.exists() else work} already exists; pass --resume to "
                         "continue that run or --overwrite to start again")
    if not (cfg.resume and ckpts):
        return None
    try:
        state = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - a truncated file, an old format
        raise UsageError(f"--resume: cannot read {ckpts[-1]} ({type(e).__name__}: {e}); "
                         "delete it to resume from the one before") from None
    if state.get("fingerprint") != cfg.fingerprint():
        old = state.get("config", {}).get("trajectory", {})
        new = cfg.trajectory()
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise UsageError(
            f"--resume: {ckpts[-1]} was written with a different configuration ("
            + "; ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in diff)
            + "); rerun with the original options, or pass --overwrite to start again")
    return state


# --------------------------------------------------------------------------- main entry
def train(cfg: TrainConfig, reporter: TrainReporter | None = None, *, model=None,
          data: TrainingData | None = None, teacher=None) -> TrainResult:
    """Train ``cfg.model`` as ``cfg.variant`` on ``cfg.data``; see the module docstring.

    ``model`` (a :class:`~mice_bench.model.MiceModel`) and ``data`` may be given directly
    (library use, tests); otherwise they are loaded from ``cfg``. Raises
    :class:`~mice_bench.errors.UsageError` on bad input before any expensive work where it
    can; nothing already written is removed unless ``cfg.overwrite``.
    """
    cfg.validate()
    state = preflight(cfg)
    with session(cfg.device) as (env, device):   # mice_bench.distributed (torchrun)
        return _train(cfg, reporter, model, data, teacher, state, env, device)


def _train(cfg: TrainConfig, reporter: TrainReporter | None, model, data: TrainingData | None,
           teacher, state: dict | None, env, device: torch.device) -> TrainResult:
    rep = reporter or TrainReporter()
    out, work = Path(cfg.output), cfg.work_dir
    amp = _autocast_dtype(cfg.precision, device)
    per_rank = cfg.batch_size // env.world if env.world else cfg.batch_size
    if cfg.batch_size % (env.world * cfg.grad_accum):
        raise UsageError(f"--batch-size {cfg.batch_size} must be a multiple of ranks x "
                         f"--grad-accum = {env.world} x {cfg.grad_accum}")
    # ---- model, teacher, data
    _seed_all(cfg.seed)
    if model is None:
        model = load_model(cfg, device)
    else:
        model = model.to(device)
    model.dropout = cfg.dropout          # the config decides, also for a model passed in
    if data is None:
        t = teacher if teacher is not None else (
            load_teacher(cfg, device) if cfg.teacher else None)
        data = prepare_data(cfg, t, rep)
        del t
    elif teacher is not None and data.teacher is None:
        data.teacher = teacher_scores(data, teacher, cfg.teacher or "teacher", cfg.cache_path(),
                                      batch_size=cfg.eval_batch_size)
    if cfg.loss == "marginmse" and data.teacher is None:
        raise UsageError("--loss marginmse needs teacher scores: give --teacher MODEL or a "
                         "JSONL whose lines have 'scores'")
    data.check()
    G = cfg.effective_group_size
    # ---- trainable parameters: those the variant uses (found by one probe pass)
    model.requires_grad_(True)
    model.train()
    probe = model(["probe query"], ["probe document"], executor=cfg.executor)
    probe.sum().backward()
    for p in model.parameters():
        if p.grad is None:
            p.requires_grad_(False)
        p.grad = None
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim >= 2]
    no_decay = [p for n, p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, eps=cfg.adam_eps)
    warm, total = cfg.effective_warmup, cfg.steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, warm, total, cfg.schedule))
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    # ---- log state (restored on resume)
    log: dict[str, Any] = {"loss": [], "validation": [], "best": None, "step_times": [],
                           "pending": [0.0, 0]}  # loss sum and count since the last entry
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        log = state["log"]
        start = int(state["step"])
    net: torch.nn.Module = model
    if env.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    log_path = Path(cfg.log_dir) / f"{_slug(out.name)}.json" if env.main else None
    info = {"variant": str(model.spec), "trainable_params": sum(p.numel() for _, p in params),
            "world_size": env.world, "device": str(device),
            "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp],
            "data": data.summary(), "data_fingerprint": data.fingerprint()}
    if env.main:
        if cfg.overwrite and state is None and work.exists():
            shutil.rmtree(work)  # the earlier run's checkpoints and best model (asked for)
        work.mkdir(parents=True, exist_ok=True)
    rep.start(cfg.steps, start, info)

    def write_log(status: str) -> None:
        if log_path is None:
            return
        _write_log(log_path, cfg, info, log, status, model, out)

    def checkpoint(done: int) -> None:
        if not env.main:
            return
        if not cfg.save_checkpoints:   # a study's run: the output and the log suffice
            write_log("running")
            return
        st = {"version": CKPT_VERSION, "step": done, "fingerprint": cfg.fingerprint(),
              "config": {"trajectory": cfg.trajectory(), "full": cfg.as_dict()},
              "model": model.state_dict(), "optimizer": opt.state_dict(),
              "scheduler": sched.state_dict(), "scaler": scaler.state_dict() if scaler else None,
              "rng": _rng_state(), "log": log}
        path = work / f"checkpoint-{done:09d}.pt"
        tmp = path.with_name(path.name + ".tmp")
        torch.save(st, tmp)
        os.replace(tmp, path)
        for old in _checkpoints(work)[:-cfg.keep_checkpoints]:
            old.unlink(missing_ok=True)
        write_log("running")

    def run_validation(done: int) -> None:
        if not env.main or not data.val_queries:
            return
        model.eval()
        m = validate_model(model, data, cfg, amp)
        model.train()
        value = m[cfg.val_metric]
        best = log["best"] is None or value > log["best"]["value"]
        log["validation"].append({"step": done, **m})
        if best:
            log["best"] = {"step": done, "metric": cfg.val_metric, "value": value, "metrics": m}
            model.save_pretrained(work / "best", trained=_provenance(
                cfg, log, done, info["data_fingerprint"]))
        rep.validation(done, m, best)

    # ---- the loop
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        groups = sample_groups(data, step, cfg.batch_size, G, cfg.seed)
        mine = groups[env.rank * per_rank:(env.rank + 1) * per_rank]
        mb = per_rank // cfg.grad_accum
        opt.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), dtype=torch.float32, device=device)
        for a in range(cfg.grad_accum):
            part = mine[a * mb:(a + 1) * mb]
            sync = contextlib.nullcontext() if (not env.active or a == cfg.grad_accum - 1) \
                else net.no_sync()
            with sync:
                qs = [g.query for g in part for _ in range(G)]
                ds = [d for g in part for d in g.docs]
                ctx = torch.autocast(device.type, dtype=amp) if amp is not None \
                    else contextlib.nullcontext()
                with ctx:
                    scores = net(qs, ds, executor=cfg.executor)
                scores = scores.float().view(len(part), G)
                teach = torch.tensor([g.teacher for g in part], dtype=torch.float32,
                                     device=device) if cfg.loss == "marginmse" else None
                loss = compute_loss(cfg.loss, scores, teach) / cfg.grad_accum
                if scaler is not None:
                    scaler.scale(loss).backward()
                else:
                    loss.backward()
            step_loss += loss.detach()
        if scaler is not None:
            scaler.unscale_(opt)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for _, p in params], cfg.grad_clip)
        lr_now = opt.param_groups[0]["lr"]
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        sched.step()
        if env.active:
            import torch.distributed as dist

            dist.all_reduce(step_loss)
            step_loss /= env.world
        lv = float(step_loss)
        if not math.isfinite(lv):
            rep.message(f"step {step + 1}: loss is {lv}")
        dt = time.perf_counter() - t0
        pps = cfg.batch_size * G / dt if dt > 0 else float("nan")
        log["step_times"].append(round(dt, 6))
        del log["step_times"][:-1000]  # the last 1,000 step times (throughput)
        log["pending"] = [log["pending"][0] + lv, log["pending"][1] + 1]
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            acc, n = log["pending"]
            log["loss"].append({"step": done, "loss": acc / n, "lr": lr_now,
                                "pairs_per_s": pps})
            log["pending"] = [0.0, 0]
        rep.step(done, lv, pps, lr_now)
        validated = False
        if (cfg.val_every and done % cfg.val_every == 0) or done == cfg.steps:
            run_validation(done)
            validated = True
        if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.steps \
                or (validated and data.val_queries):
            checkpoint(done)
        if env.active:
            import torch.distributed as dist

            dist.barrier()
    # ---- the output
    model.eval()
    model.requires_grad_(False)
    selected = "last"
    if env.main:
        if log["best"] is not None and (work / "best").is_dir():
            selected = f"best@{log['best']['step']}"
            _install(work / "best", out)
        else:
            model.save_pretrained(out, trained=_provenance(cfg, log, cfg.steps,
                                                           info["data_fingerprint"]))
        _write_json(out / "training.json", {
            "selected": selected, "log": str(log_path) if log_path else None,
            "config": cfg.as_dict(), "best": log["best"],
            "data_fingerprint": info["data_fingerprint"]})
        write_log("finished")
    if env.active:
        import torch.distributed as dist

        dist.barrier()
    times = log["step_times"][3:] or log["step_times"]
    pps = cfg.batch_size * G / statistics.median(times) if times else None
    return TrainResult(output=out, log_path=log_path, steps=cfg.steps, selected=selected,
                       best_step=log["best"]["step"] if log["best"] else None,
                       best_metrics=log["best"]["metrics"] if log["best"] else None,
                       final_loss=log["loss"][-1]["loss"] if log["loss"] else None,
                       pairs_per_s=pps, loss_curve=list(log["loss"]),
                       validation_curve=list(log["validation"]), world_size=env.world)


def _write_json(path: Path, data: dict) -> None:
    from ..results import atomic_write_json

    atomic_write_json(path, data)


def _install(src: Path, dst: Path) -> None:
    """Copy the checkpoint directory ``src`` to ``dst``, replacing it atomically."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    shutil.copytree(src, tmp / "x")
    old = dst.with_name(f".{dst.name}.old")
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(tmp / "x", dst)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def _write_log(path: Path, cfg: TrainConfig, info: dict, log: dict, status: str, model,
               out: Path) -> None:
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
                    best=log["best"], throughput=throughput)
    atomic_write_json(path, data)


__all__ = ["train", "preflight", "TrainResult", "TrainReporter", "validate_model", "lr_factor",
           "load_model", "load_teacher", "prepare_data"]
