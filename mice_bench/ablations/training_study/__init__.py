"""Training studies (a study file with ``[training]``, e.g. ``ablations/mini-replication.toml``).

The plan, in the order it runs (each task skipped when its outputs exist):

1. the study's ``[[latency]]`` workloads (the ordinary latency tasks), into the study folder;
2. with ``steps = "auto"``: *calibrate the teacher* - a few timed training steps of the
   teacher's variant and loss give its pairs/s; its steps are ``teacher_share`` of the budget;
3. *train the teacher* (:func:`mice_bench.training.train`, typed :class:`TrainConfig`);
4. *teacher scores*: the teacher scores every training (query, document) pair once (cached in
   the training cache; :func:`mice_bench.training.data.teacher_scores`);
5. *evaluate the teacher* (:func:`mice_bench.effectiveness.runner.run_effectiveness`);
6. with ``steps = "auto"``: *calibrate the students* - pairs/s of every student variant; the
   students' common number of steps is what fits the rest of the budget (see
   :func:`derive_student_steps`);
7. per student: *train* (from the base encoder or from the teacher's checkpoint) and
   *evaluate* it with its own variant;
8. *summary*: paired tests of every system against the baseline system on every dataset,
   corrected together (:func:`mice_bench.evaluation.summary.summarize`), written to
   ``<root>/summary.json|md``, plus ``<root>/study.json`` (what ran, on what machine, the
   pairs/s every training reached) and ``<root>/README.md``.

Where things go: ``<root>`` = ``results/<study>/<size>/`` (``latency/``, ``effectiveness/``,
``calibration.json``, ``summary.*``, ``study.json``, ``README.md``); training logs
``results/training/<study>-<size>-<system>.json``; checkpoints
``<checkpoints>/<study>-<size>-<system>/`` (default: the mice-bench cache folder, not the
repository).

Skipping: an evaluation is done when ``<root>/effectiveness`` has the system's result on
every dataset; a training is needed only when its checkpoint is missing and its evaluation
is not done (the teacher also when a student still has to be trained).

Modules, one job each: :mod:`.paths` (where files go), :mod:`.context` (what the tasks
share), :mod:`.plan` (the tasks and what is skipped), :mod:`.configs` (each task's typed
config and equivalent command), :mod:`.work` (training, teacher scores, evaluation),
:mod:`.sizing` (calibration and derived steps), :mod:`.summary` (paired tests, ``study.json``),
:mod:`.readme` (the folder's README).
"""

from .context import Context
from .paths import CALIBRATION, STUDY_RECORD, SUMMARY, checkpoints_dir, run_prefix, study_root
from .plan import Step, plan_training_study
from .sizing import derive_student_steps, derive_teacher_steps
from .summary import study_summary, write_summary

__all__ = ["CALIBRATION", "STUDY_RECORD", "SUMMARY", "Context", "Step", "checkpoints_dir",
           "derive_student_steps", "derive_teacher_steps", "plan_training_study", "run_prefix",
           "study_root", "study_summary", "write_summary"]
