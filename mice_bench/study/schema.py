"""What a study file may hold: the keys of each table with their types and choices, and
the parsed study (:class:`Study` and the plans of its tables).

The tables of keys drive the checks of :mod:`.checks`; :mod:`.sections` builds the
dataclasses from a file's tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..effectiveness.plan import EffectivenessConfig
from ..errors import UsageError
from ..latency.config import LatencyConfig
from ..options import study_choices, study_keys
from ..training.config import TrainConfig

__all__ = ["AUTO_KEYS", "CHOICES", "EFFECTIVENESS_KEYS", "LATENCY_KEYS", "ROLE_KEYS",
           "SIZE_KEYS", "STUDENT_KEYS", "TEACHER_KEYS", "TOP_KEYS", "TRAINING_KEYS",
           "AutoSteps", "EffectivenessPlan", "LatencyWorkload", "Study", "StudyError",
           "TrainRole", "TrainingPlan"]


class StudyError(UsageError):
    """A study file that cannot be used; the message names the file and the key."""


#: the top-level keys of a study file
TOP_KEYS = {"name": str, "description": str, "variants": list, "effectiveness": dict,
            "latency": list, "training": dict, "sizes": dict, "default_size": str,
            "auto": dict}
#: ``[effectiveness]``: the options of ``mice-bench effectiveness`` (declared once, on
#: :class:`~mice_bench.effectiveness.plan.EffectivenessConfig`) and the table's own keys
EFFECTIVENESS_KEYS: dict[str, tuple] = study_keys(
    EffectivenessConfig, models=(list,), variants=(list,), in_domain=(list,))
#: each ``[[latency]]`` workload: the options of ``mice-bench latency`` (declared once, on
#: :class:`~mice_bench.latency.config.LatencyConfig`) and the workload's own keys
LATENCY_KEYS: dict[str, tuple] = study_keys(LatencyConfig, name=(str,), variants=(list,))
#: ``[training]``: the options every trained model shares (those of ``mice-bench train``
#: declared on :class:`~mice_bench.training.config.TrainConfig` that a study may set), the
#: defaults of the teacher and of the student groups, and where checkpoints go
TRAINING_KEYS: dict[str, tuple] = study_keys(
    TrainConfig, base=(str,), steps=(int, str), checkpoints=(str,), teacher=(dict,),
    students=(list, dict))
#: ``[training.teacher]`` and ``[[training.students]]`` (one group of variants)
ROLE_KEYS: dict[str, tuple] = {
    "variant": (str,), "variants": (list,), "init": (str,), "loss": (str,),
    "steps": (int, str), "batch_size": (int,), "group_size": (int,), "lr": (float, int),
    "warmup": (int,), "label": (str,), "label_suffix": (str,),
}
TEACHER_KEYS = ("variant", "loss", "steps", "batch_size", "group_size", "lr", "warmup",
                 "label")
STUDENT_KEYS = ("variants", "init", "loss", "steps", "batch_size", "group_size", "lr",
                 "warmup", "label_suffix")
#: ``steps = "auto"``: how the steps are derived from measured pairs/s (ablations runner)
AUTO_KEYS: dict[str, tuple] = {
    "budget_s": (float, int), "reserve_s": (float, int), "teacher_share": (float,),
    "calib_steps": (int,), "min_steps": (int,), "max_steps": (int,), "round_to": (int,),
}
#: a ``[sizes.NAME]`` table
SIZE_KEYS = {"description": (str,), "training": (dict,), "effectiveness": (dict,),
             "latency": (dict,), "auto": (dict,)}

#: the keys (anywhere) whose value is one of fixed choices (None: checked where parsed)
CHOICES = {**study_choices(EffectivenessConfig), **study_choices(LatencyConfig),
           **study_choices(TrainConfig), "first_stage": None,
           "dtype": ("fp32", "fp16", "bf16"), "loss": ("marginmse", "lce", "bce"),
           "init": ("base", "teacher")}


@dataclass
class EffectivenessPlan:
    models: list[str]
    datasets: list[str]                 # expanded names
    variants: list[str]
    options: dict[str, Any] = field(default_factory=dict)   # other keys, as given
    #: ``datasets`` as the file wrote it (groups such as ``all`` unexpanded; ``--dry-run``
    #: warns about ``all``)
    datasets_as_written: list[str] = field(default_factory=list)


@dataclass
class LatencyWorkload:
    name: str
    options: dict[str, Any]             # `mice-bench latency` options (underscored)
    variants: list[str]


@dataclass
class TrainRole:
    """One model a training study trains: the teacher or one student."""

    label: str                  # the system's name (file names, tables, figures)
    role: str                   # teacher | student
    variant: str
    init: str                   # base | teacher: what the weights start from
    loss: str                   # marginmse | lce | bce
    steps: int | str            # an integer, or "auto" (derived at run time)
    batch_size: int
    group_size: int | None
    lr: float | None
    warmup: int | None


@dataclass
class TrainingPlan:
    """``[training]``: the base encoder, the data and shared options, teacher and students."""

    base: str                   # HF id, path or pkg:<module>
    data: str
    options: dict[str, Any]     # shared TrainConfig options (first_stage, docs, lr, ...)
    checkpoints: str | None     # where checkpoints go (None: the cache folder)
    teacher: TrainRole
    students: list[TrainRole]

    @property
    def systems(self) -> list[TrainRole]:
        return [self.teacher, *self.students]

    @property
    def auto_steps(self) -> bool:
        return any(r.steps == "auto" for r in self.systems)


@dataclass
class AutoSteps:
    """``steps = "auto"``: steps derived at run time from measured pairs/s (see
    docs/report.md, "Sizing by measured throughput")."""

    budget_s: float = 480.0     # the whole study, latency and evaluation included
    reserve_s: float = 30.0     # kept free (summary, unexpected slowness)
    teacher_share: float = 0.2  # of the budget, for the teacher's training steps
    calib_steps: int = 6        # timed training steps per variant (first 3 not counted)
    min_steps: int = 10
    max_steps: int = 20_000
    round_to: int = 10          # steps are rounded down to a multiple of this


@dataclass
class Study:
    path: Path
    name: str
    description: str
    variants: list[str]
    effectiveness: EffectivenessPlan | None
    latency: list[LatencyWorkload]
    training: TrainingPlan | None = None
    size: str | None = None             # the size applied ([sizes.NAME]); None: none
    size_description: str = ""
    sizes: list[str] = field(default_factory=list)
    auto: AutoSteps | None = None

    def results_root(self, results: str | Path) -> Path:
        """Where a training study's results go: ``results/<name>[/<size>]``."""
        from ..naming import slug

        root = Path(results) / slug(self.name)
        return root / slug(self.size) if self.size else root
