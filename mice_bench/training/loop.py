"""The entry point of training: ``train(config) -> TrainResult``.

:func:`train` checks the output (:func:`preflight`), joins the ``torchrun`` job if there is
one (:mod:`mice_bench.distributed`), loads the model, the teacher and the data, and runs a
:class:`~.trainer.Trainer` (the optimisation, validation, checkpoints and the output; see
:mod:`.trainer`). Checkpoint files: :mod:`.state`.

Files: ``<output>/`` (a :meth:`InteractionModel.save_pretrained` checkpoint + ``training.json``),
``<output>.train/`` (``checkpoint-<step>.pt``, ``best/``), and the JSON training log
``<log_dir>/<output name>.json`` (schema ``mice-bench/training``; ``log_dir`` defaults to the
ad-hoc results folder, :func:`mice_bench.results.default_results_dir`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..distributed import session
from ..errors import UsageError
from .config import TrainConfig
from .data import TrainingData, load_training_data, teacher_scores
from .state import list_checkpoints, read_checkpoint, seed_all
from .trainer import (Trainer, TrainingDiverged, TrainReporter, TrainResult, autocast_dtype,
                      lr_factor)
from .validation import validate_model

#: the name a training study still imports (use :func:`~.trainer.autocast_dtype`)
_autocast_dtype = autocast_dtype


def load_model(cfg: TrainConfig, device: torch.device | str = "cpu"):
    """The model to train: ``cfg.model`` (hub id, path, mice-bench checkpoint, architecture
    name) as ``cfg.variant`` (UsageError/SpecError when it cannot hold it)."""
    from ..model import InteractionModel

    model = InteractionModel.from_pretrained(cfg.model, variant=cfg.variant, device=device,
                                      seed=cfg.seed, query_max_tokens=cfg.query_max_tokens,
                                      doc_max_tokens=cfg.doc_max_tokens)
    model.dropout = cfg.dropout          # train-mode dropout (opt-in; --recipe paper sets it)
    return model


def load_teacher(cfg: TrainConfig, device: torch.device | str = "cpu"):
    from ..model import InteractionModel

    if cfg.teacher is None:
        return None
    try:
        return InteractionModel.from_pretrained(cfg.teacher, variant=cfg.teacher_variant,
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


def preflight(cfg: TrainConfig) -> dict | None:
    """Check the outputs before anything is loaded or written: the log folder must be
    writable; an earlier run is not overwritten (unless ``overwrite``); with ``resume``, the
    state of the latest checkpoint (verified: :func:`~.state.read_checkpoint`), refused when
    there is none or it was written with a different configuration."""
    from ..checkpoint_files.folder import checkpoint_target
    from ..naming import slug
    from ..results import check_output

    out, work = Path(cfg.output), cfg.work_dir
    check_output(Path(cfg.log_dir) / f"{slug(out.name)}.json", "--log-dir")
    if out.exists() and (cfg.overwrite or cfg.resume):   # a file or others' files: never
        try:
            checkpoint_target(out)
        except UsageError as e:
            raise UsageError(f"--output {e}") from None
    if not cfg.resume:
        if not cfg.overwrite and (out.exists() or work.exists()):
            raise UsageError(f"{out if out.exists() else work} already exists; pass --resume "
                             "to continue that run or --overwrite to start again")
        return None
    ckpts = list_checkpoints(work)
    if not ckpts:
        where = (f"{work} holds no checkpoint-*.pt (the run stopped before its first one)"
                 if work.is_dir() else f"there is no {work}")
        raise UsageError(f"--resume: nothing to resume for --output {out}: {where}; run "
                         "without --resume to start (--overwrite if files are in the way)")
    state = read_checkpoint(ckpts[-1])
    if state.get("fingerprint") != cfg.fingerprint():
        old = state.get("config", {}).get("trajectory", {})
        new = cfg.trajectory()
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise UsageError(
            f"--resume: {ckpts[-1]} was written with a different configuration ("
            + "; ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in diff)
            + "); rerun with the original options, or pass --overwrite to start again")
    return state


def train(cfg: TrainConfig, reporter: TrainReporter | None = None, *, model=None,
          data: TrainingData | None = None, teacher=None) -> TrainResult:
    """Train ``cfg.model`` as ``cfg.variant`` on ``cfg.data``; see :mod:`.trainer`.

    ``model`` (a :class:`~mice_bench.model.InteractionModel`) and ``data`` may be given directly
    (library use, tests); otherwise they are loaded from ``cfg``. Raises
    :class:`~mice_bench.errors.UsageError` on bad input before any expensive work where it
    can, and :class:`~.trainer.TrainingDiverged` when a loss, gradient or weight becomes
    non-finite (nothing of that step saved); nothing already written is removed unless
    ``cfg.overwrite``.
    """
    cfg.validate()
    state = preflight(cfg)
    with session(cfg.device) as (env, device):   # mice_bench.distributed (torchrun)
        rep = reporter or TrainReporter()
        seed_all(cfg.seed)
        model = load_model(cfg, device) if model is None else model.to(device)
        model.dropout = cfg.dropout          # the config decides, also for a model passed in
        if data is None:
            t = teacher if teacher is not None else (
                load_teacher(cfg, device) if cfg.teacher else None)
            data = prepare_data(cfg, t, rep)
            del t
        elif teacher is not None and data.teacher is None:
            data.teacher = teacher_scores(data, teacher, cfg.teacher or "teacher",
                                          cfg.cache_path(), batch_size=cfg.eval_batch_size)
        if cfg.loss == "marginmse" and data.teacher is None:
            raise UsageError("--loss marginmse needs teacher scores: give --teacher MODEL or a "
                             "JSONL whose lines have 'scores'")
        data.check()
        trainer = Trainer(cfg, model, data, env=env, device=device, reporter=rep, state=state)
        return trainer.run()


__all__ = ["train", "preflight", "TrainResult", "TrainReporter", "TrainingDiverged",
           "validate_model", "lr_factor", "load_model", "load_teacher", "prepare_data"]
