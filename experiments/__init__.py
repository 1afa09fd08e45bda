"""operad.experiments: data sets, training, evaluation, the ``operad`` command
and the experiment configs that reproduce the seed papers' claims.

    >>> from operad.experiments import train, load_dataset, Config
    >>> Config(model="resnet20").epochs
    10

Note: ``operad.experiments.train`` and ``operad.experiments.evaluate`` are the
functions; their modules are ``sys.modules["operad.experiments.train"]`` etc.
"""
from __future__ import annotations

from operad.experiments.augment import Augment, DeviceBatches, SegAugment, mix_batch, mixed_loss
from operad.experiments.config import Config, ConfigError, expand_runs, load_config, parse_overrides
from operad.experiments.data import ArrayData, DataError, data_root, download, download_cifar, load_dataset
from operad.experiments.expr import ExprError, parse_expr
from operad.experiments.evaluate import evaluate, jpeg_sweep, rotation_sweep, shift_consistency
from operad.experiments.metrics import ConfusionMatrix, accuracy, topk_correct
from operad.experiments.train import DivergenceError, build_model, load_checkpoint, load_run_model, train, train_run

__all__ = ["Augment", "DeviceBatches", "SegAugment", "mix_batch", "mixed_loss", "Config", "ConfigError",
           "expand_runs", "load_config", "parse_overrides", "ArrayData", "DataError", "data_root", "download",
           "download_cifar", "load_dataset", "evaluate", "jpeg_sweep", "rotation_sweep", "shift_consistency",
           "ConfusionMatrix", "accuracy", "topk_correct", "DivergenceError", "build_model", "load_checkpoint",
           "load_run_model", "train", "train_run", "parse_expr", "ExprError"]
