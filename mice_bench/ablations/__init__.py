"""Ablation studies: ``ablations/*.toml`` study files and ``mice-bench run``.

* :mod:`mice_bench.study` parses and validates a study file (errors name the offending key);
* :mod:`.runner` plans a study against the existing results and runs what is missing
  through the ``latency`` / ``effectiveness`` commands, in-process;
* :mod:`.training_study` the studies that train their models (``[training]``): teacher,
  cached teacher scores, distilled students, their evaluations and the study summary, with
  steps derived from measured pairs/s (``steps = "auto"``);
* :mod:`.cli` the ``run`` sub-command.
"""

from ..study import Study, StudyError, load_study  # noqa: F401
