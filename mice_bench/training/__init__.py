"""Training re-rankers in any interaction variant (``mice-bench train``).

>>> from mice_bench.training import make_config, train
>>> # cfg = make_config(model="minilm-l6", variant="mice-l2+2", data="beir/scifact/train",
>>> #                   output="runs/mice", loss="lce", steps=1000)
>>> # result = train(cfg)          # -> TrainResult (output checkpoint, log, curves, pairs/s)

Modules: :mod:`.config` (:class:`TrainConfig`, recipes), :mod:`.data` (training groups from
ir_datasets + a first stage, or JSONL; teacher scores), :mod:`.losses` (MarginMSE, LCE, BCE),
:mod:`.loop` (:func:`train`: checks, loading), :mod:`.trainer` (:class:`~.trainer.Trainer`:
step, validate, checkpoint, the output), :mod:`.state` (checksummed checkpoint files),
:mod:`.validation`, :mod:`.cli` (the command).
"""

from .config import RECIPES, TrainConfig, make_config
from .loop import TrainReporter, TrainResult, train
from .trainer import TrainingDiverged

__all__ = ["TrainConfig", "make_config", "RECIPES", "train", "TrainResult", "TrainReporter",
           "TrainingDiverged"]
