"""Options several commands share, declared once (flag, type and help), and :class:`Command`.

Choices in help text come from the registries (``{methods}``, ``{backbones}``...), filled in
by :class:`Command` only when a command's help is shown: the registries import torch,
Cornac or pandas, which ``raysearch <command>`` must not pay for at start-up.
"""
from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Annotated, Any, Callable, List, Optional

import typer
from typer.core import TyperCommand

from raysearch.config import SweepConfig  # light: no torch, Ray or registries of plug-ins


def _methods() -> list[str]:
    from raysearch.train.methods import METHODS

    return METHODS.names()


def _weightings() -> list[str]:
    from raysearch.cf.weights import WEIGHTINGS

    return WEIGHTINGS.names()


def _cf_models() -> list[str]:
    from raysearch.cf import CF_MODELS

    return CF_MODELS.names()


def _backbones() -> list[str]:
    from raysearch.model.backbones import BACKBONES

    return BACKBONES.names()


def _datasets(kind: Optional[str] = None) -> list[str]:
    from raysearch.data import DATASETS

    return [n for n in DATASETS.names() if kind is None or DATASETS.get(n).kind == kind]


def _optimizers() -> list[str]:
    from raysearch.config import OPTIMIZERS

    return list(OPTIMIZERS)


def _schedules() -> list[str]:
    from raysearch.config import SCHEDULES

    return list(SCHEDULES)


def _export_formats() -> list[str]:
    from raysearch.export import EXPORT_FORMATS

    return EXPORT_FORMATS.names()


def _default_variants() -> list[str]:
    from raysearch.experiment.protocol import DEFAULT_VARIANTS

    return [", ".join(DEFAULT_VARIANTS)]


def _out_formats() -> list[str]:
    from raysearch.predict import OUT_FORMATS

    return list(OUT_FORMATS)


#: placeholder in help text -> the names it lists (each looked up only when help is shown)
CHOICES: dict[str, Callable[[], list[str]]] = {
    "methods": _methods, "weightings": _weightings, "cf_models": _cf_models, "backbones": _backbones,
    "datasets": _datasets, "adapters": lambda: _datasets("adapter"), "optimizers": _optimizers,
    "schedules": _schedules, "export_formats": _export_formats, "out_formats": _out_formats,
    "default_variants": _default_variants,
    # raysearch.choices: light registries, listed from their entries
    "schedulers": lambda: _choice("SCHEDULERS"), "searchers": lambda: _choice("SEARCHERS"),
    "shuffle_controls": lambda: _choice("SHUFFLE_CONTROLS"), "rung_metrics": lambda: _choice("RUNG_METRICS"),
}


def _choice(registry: str) -> list[str]:
    from raysearch import choices

    return getattr(choices, registry).names()


class _Names(dict):
    def __missing__(self, kind: str) -> str:
        return " | ".join(CHOICES[kind]())


def fill_choices(text: str) -> str:
    """``"method: {methods}"`` -> ``"method: contrastive | image_only | ..."`` (registry order)."""
    return text.format_map(_Names()) if "{" in text else text


class Command(TyperCommand):
    """A command whose option help lists registry choices, looked up when the help is shown."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for p in self.params:
            if getattr(p, "help", None):
                p.help = fill_choices(p.help)  # type: ignore[attr-defined]
        return super().format_help(ctx, formatter)


def add(app: typer.Typer, *commands: Callable[..., Any]) -> None:
    """Register module-level command functions (name: the function's, ``_`` -> ``-``)."""
    for fn in commands:
        app.command(cls=Command)(fn)


# ------------------------------------------------------------------ options generated from config fields

def _option_type(tp: Any, optional: bool) -> Any:
    """A field's type as typer takes it: ``X | None`` -> ``Optional[X]``; ``optional``: ``Optional[X]``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return Optional[inner]
    return Optional[tp] if optional else tp


def _cli_fields(cls: Any) -> list[dataclasses.Field]:
    """The fields of config class ``cls`` that are command-line options (:func:`raysearch.config.option`)."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def _param_name(f: dataclasses.Field) -> str:
    """The command function's parameter of field ``f`` (an inverted ``--no-x`` flag: ``no_x``)."""
    return f.metadata["flags"][0].lstrip("-").replace("-", "_") if f.metadata["invert"] else f.name


def config_option(cls: Any, name: str) -> Any:
    """``Annotated[type, typer.Option(flags, help=...)]`` of field ``name`` of config class ``cls``:
    type, flags and help are the field's (its metadata; see :func:`raysearch.config.option`)."""
    f = next((f for f in _cli_fields(cls) if f.name == name), None)
    if f is None:
        raise KeyError(f"{cls.__name__}.{name} is not a command-line option")
    meta = f.metadata
    tp = bool if meta["invert"] else _option_type(typing.get_type_hints(cls)[name], meta["optional"])
    flags = meta["flags"] or ("--" + name.replace("_", "-"),)
    return Annotated[tp, typer.Option(*flags, help=meta["help"])]


def config_parameters(cls: Any) -> list[inspect.Parameter]:
    """One keyword parameter per option field of ``cls`` (field order; defaults the field's), for a
    command function whose ``__signature__`` typer reads: the command's options are the config's."""
    return [inspect.Parameter(_param_name(f), inspect.Parameter.KEYWORD_ONLY,
                              default=(not f.default) if f.metadata["invert"] else f.default,
                              annotation=config_option(cls, f.name))
            for f in _cli_fields(cls)]


def config_values(cls: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``cls`` from a command's option values (:func:`config_parameters`)."""
    return {f.name: (not options[_param_name(f)]) if f.metadata["invert"] else options[_param_name(f)]
            for f in _cli_fields(cls)}


# ------------------------------------------------------------------ shared by several commands

JsonOut = Annotated[bool, typer.Option(
    "--json", help="Print one JSON document on stdout instead of tables (everything else goes to stderr).")]
PublicDataset = Annotated[str, typer.Option("--dataset", "-d", help="Public dataset: {adapters}.")]
Raw = Annotated[str, typer.Option("--raw", help="Folder holding the public dump in its original format.")]
SplitSeed = Annotated[Optional[int], typer.Option(
    "--split-seed", help="Seed of the item-level split (split.seed: train/val/test items, or the folds).")]
LabelRatio = Annotated[Optional[float], typer.Option(
    "--label-ratio", help="Fraction of train items keeping their labels (split.label_ratio).")]
Config = Annotated[Optional[str], typer.Option(
    "--config", help="RunConfig YAML (e.g. a sweep's best.yaml); flags and --set override it.")]
Sets = Annotated[Optional[List[str]], typer.Option(
    "--set", metavar="SECTION.KEY=VALUE",
    help="Set any config field, e.g. --set train.weight_decay=1e-4 --set cf.model=bpr (repeatable; the value "
         "is read as YAML). Precedence: --config file < explicit flags < --set.")]
# options that are SweepConfig fields: type, flags, default and help declared once, on the field
DataRoot = config_option(SweepConfig, "data_root")
Dataset = config_option(SweepConfig, "dataset")
Method = config_option(SweepConfig, "method")
Epochs = config_option(SweepConfig, "epochs")
Address = config_option(SweepConfig, "address")
CpusPerTrial = config_option(SweepConfig, "cpus_per_trial")
GpusPerTrial = config_option(SweepConfig, "gpus_per_trial")
WorkersPerTrial = config_option(SweepConfig, "workers_per_trial")
MaxFailures = config_option(SweepConfig, "max_failures")
CheckpointEvery = config_option(SweepConfig, "checkpoint_every")
CheckpointOverhead = config_option(SweepConfig, "checkpoint_overhead")
StatusEvery = config_option(SweepConfig, "status_every")
MaxConcurrent = config_option(SweepConfig, "max_concurrent")
WandbProject = config_option(SweepConfig, "wandb_project")
NoWandb = config_option(SweepConfig, "wandb")
Top = Annotated[int, typer.Option("--top", help="Rows in the results table.")]
RunDir = Annotated[str, typer.Argument(help="A `raysearch tune` run directory.")]
DashboardDir = Annotated[str, typer.Argument(help="A `raysearch tune` run directory or a `raysearch experiment` "
                                                  "--out directory.")]
Out = Annotated[Optional[str], typer.Option("--out", "-o", help="Where to write the output (see the command).")]
ModelPath = Annotated[str, typer.Option(
    "--model", "-m", help="Model dir (train --out / a trial checkpoint), sweep run dir (its best trial), "
                          "or an exported .onnx / TorchScript file; a local path or a URI (file://, s3://, gs://).")]

# ------------------------------------------------------------------ CF options (CFConfig fields)

CF_MODEL_HELP = "CF model (cf.model): {cf_models}."
CF_DIM_HELP = "CF vector size = latent size (cf.dim)."
CfModel = Annotated[Optional[str], typer.Option("--model", "-m", help=CF_MODEL_HELP)]
CfDim = Annotated[Optional[int], typer.Option("--dim", help=CF_DIM_HELP)]
#: CFConfig field -> its flag on the ``cf`` commands (``raysearch train`` names them --cf-*)
CF_FLAGS: dict[str, Any] = {
    "model": CfModel,
    "dim": CfDim,
    "hidden": Annotated[Optional[str], typer.Option(
        "--hidden", help="VAECF encoder hidden layers (cf.hidden), e.g. 600,200 ('' for none).")],
    "epochs": Annotated[Optional[int], typer.Option("--epochs", help="CF training epochs (cf.epochs).")],
    "lr": Annotated[Optional[float], typer.Option("--lr", help="CF learning rate (cf.lr).")],
    "beta": Annotated[Optional[float], typer.Option("--beta", help="VAECF KL weight (cf.beta).")],
    "batch_size": Annotated[Optional[int], typer.Option("--batch-size", help="CF batch size (cf.batch_size).")],
    "reg": Annotated[Optional[float], typer.Option(
        "--reg", help="BPR lambda_reg / GMF weight decay / WMF lambdas (cf.reg).")],
    "bias": Annotated[Optional[bool], typer.Option(
        "--bias/--no-bias", help="Learn and export a per-item bias (cf.bias).")],
    "seed": Annotated[Optional[int], typer.Option("--seed", help="CF model seed (cf.seed).")],
}
CfCache = Annotated[bool, typer.Option("--cache/--no-cache", help="Read/write the Parquet vector cache.")]


# ------------------------------------------------------------------ --set section.key=value

def _field_type(section_cls: Any, name: str) -> Any:
    import typing

    return typing.get_type_hints(section_cls)[name]


def _scalar(item: str, raw: str, tp: Any) -> Any:
    """The YAML value of ``raw``, read as config files are (:func:`~raysearch.config.parse_yaml`: no
    anchors, no duplicate keys, ``1e-4`` a float); a float field also takes the words Python reads
    as floats (``nan``, ``inf``), so the finite check refuses them by name."""
    import typing

    from raysearch.config import parse_yaml
    from raysearch.errors import MAX_ECHO, short

    shown = item if len(item) <= MAX_ECHO else f"{item[:MAX_ECHO]}... ({len(item):,} characters)"
    value = parse_yaml(raw, f"--set {shown}", syntax_error=f"value {short(raw)} is not a YAML scalar or list")
    if isinstance(value, str) and float in (tp, *typing.get_args(tp)):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def apply_sets(data: dict[str, Any], sets: Optional[List[str]], cls: Any) -> dict[str, Any]:
    """Apply ``--set section.key=value`` items to ``data`` (``to_dict`` of a ``cls`` config), in order.

    Only the shape is checked here (``SECTION.KEY=VALUE``, a known section and key); types and
    ranges are checked by ``from_dict``/the config classes, whose errors name the key.
    """
    import dataclasses
    import typing

    from raysearch.config import ConfigError

    hints = typing.get_type_hints(cls)
    sections = [f.name for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])]
    for item in sets or ():
        key, eq, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not eq or not dot or not section or not name:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. --set train.weight_decay=1e-4")
        if section not in sections:
            raise ConfigError(f"--set {item}: unknown section {section!r}; choose one of {', '.join(sections)}")
        if name not in data[section]:
            raise ConfigError(f"--set {item}: unknown key {section}.{name}; valid keys: "
                              f"{', '.join(sorted(data[section]))}")
        data[section][name] = _scalar(item, raw.strip(), _field_type(hints[section], name))
    return data
