"""Search-space YAML -> an Optuna define-by-run function (and back to a ``RunConfig``).

A search-space file has three sections::

    base:            # fixed RunConfig fields every trial starts from (same keys as best.yaml)
      train: {backbone: tiny_cnn, epochs: 6}
    params:          # searched fields, "section.field" -> distribution (order matters for `when`)
      train.lr:        {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      train.weighting: {type: categorical, choices: [uniform, interaction, loss]}
      train.omega:     {type: float, low: 1.0, high: 10.0, when: {train.weighting: [interaction, loss]}}
      cf.hidden:       {type: categorical, choices: [[256], [128, 64]], when: {cf.model: vaecf}}
    asha:            # optional scheduler knobs
      grace_period: 1
      reduction_factor: 2
      metric: val_map  # what the rungs compare: val_map or val_auc (the pick stays on val mAP)

Define-by-run (rather than a static Tune dict) is what makes conditionals possible: Omega is only
sampled when the weighting is not uniform and VAECF-only options only when the CF model is VAECF,
so TPE never wastes its model on parameters that have no effect.  Every mistake (unknown key,
bad range, wrong type, conditional on an unknown parameter) is a ``ConfigError`` naming the file
and the key.  Each parameter's extremes/choices are also pushed through the typed configs at
parse time, so a range the training stage would reject fails before the sweep starts.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


from raysearch.choices import DEFAULT_RUNG_METRIC, RUNG_METRICS
from raysearch.config import (CFConfig, ConfigError, RunConfig, SplitConfig, TrainConfig, _type_ok, check_choice,
                               from_dict, to_dict)

SECTIONS: dict[str, type] = {"split": SplitConfig, "cf": CFConfig, "train": TrainConfig}
TOP_KEYS = ("description", "base", "params", "asha")
PARAM_KEYS = {
    "float": {"type", "low", "high", "log", "step", "when"},
    "int": {"type", "low", "high", "log", "step", "when"},
    "categorical": {"type", "choices", "when"},
}
ASHA_KEYS = {"grace_period": int, "reduction_factor": int, "metric": str}
# Categorical choices for these fields must be registered names (checked when the registry exists).
_REGISTRIES = {
    "train.method": ("raysearch.train.methods", "METHODS"),
    "train.weighting": ("raysearch.cf.weights", "WEIGHTINGS"),
    "train.backbone": ("raysearch.model.backbones", "BACKBONES"),
    "cf.model": ("raysearch.cf", "CF_MODELS"),
}


@dataclass(frozen=True)
class Param:
    """One searched field; ``when`` = ((other_param, allowed_values), ...) all of which must hold."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @property
    def encoded_choices(self) -> list[Any]:
        """Optuna only stores None/bool/int/float/str: list choices (e.g. cf.hidden) become JSON strings."""
        return [_encode(c) for c in self.choices]

    def decode(self, value: Any) -> Any:
        if self.kind != "categorical":
            return value
        for c in self.choices:
            if _encode(c) == value:
                return c
        raise ConfigError(f"{self.name}: value {value!r} is not one of the choices {list(self.choices)}")


def _encode(v: Any) -> Any:
    return json.dumps(list(v)) if isinstance(v, (list, tuple)) else v


@dataclass(frozen=True)
class SearchSpace:
    """A parsed search-space file: fixed base config + conditional distributions."""

    path: str
    base: RunConfig = field(default_factory=RunConfig)
    params: tuple[Param, ...] = ()
    grace_period: int = 1
    reduction_factor: int = 2
    rung_metric: str = DEFAULT_RUNG_METRIC

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def define_by_run(self) -> "DefineByRun":
        return DefineByRun(self)

    def apply(self, values: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
        """The RunConfig of one trial: ``base`` with the sampled (Optuna-encoded) values set."""
        data = to_dict(base or self.base)
        by_name = {p.name: p for p in self.params}
        for name, value in values.items():
            if name not in by_name:
                raise ConfigError(f"{self.path}: sampled value for unknown parameter {name!r}")
            section, key = name.split(".", 1)
            v = by_name[name].decode(value)
            data[section][key] = list(v) if isinstance(v, tuple) else v
        return from_dict(RunConfig, data, where=f"{self.path} (trial parameters)")

    def with_base(self, **changes: Any) -> "SearchSpace":
        """Override top-level base fields (``dataset``, ``data_root``) from the command line."""
        return dataclasses.replace(self, base=dataclasses.replace(self.base, **changes))

    def with_method(self, method: str, all_methods: list[str] | None = None) -> "SearchSpace":
        """``--method NAME`` pins the method; ``--method all`` makes it the first categorical."""
        params = tuple(p for p in self.params if p.name != "train.method")
        if method == "all":
            names = tuple(all_methods or _registered_names("train.method"))
            params = (Param("train.method", "categorical", choices=names),) + params
            return dataclasses.replace(self, params=params)
        _check_choice_names(self.path, "train.method", [method])
        dropped = [p.name for p in params if any(c == "train.method" for c, _ in p.when)]
        if dropped:  # conditionals on the method collapse to the pinned value
            params = tuple(
                dataclasses.replace(p, when=tuple((c, v) for c, v in p.when if c != "train.method"))
                for p in params
                if all(method in v for c, v in p.when if c == "train.method")
            )
        if not _uses_cf(method):  # e.g. image_only: CF and weighting parameters would be dead dimensions for TPE
            params = tuple(p for p in params if not p.name.startswith("cf.") and p.name not in CF_TRAIN_PARAMS)
            params = tuple(p for p in params if all(c in {q.name for q in params} for c, _ in p.when))
        base = dataclasses.replace(self.base, train=dataclasses.replace(self.base.train, method=method))
        return dataclasses.replace(self, base=base, params=params)


CF_TRAIN_PARAMS = ("train.weighting", "train.alpha", "train.omega")


def _uses_cf(method: str) -> bool:
    from raysearch.train.methods import METHODS

    return METHODS.get(method).uses_cf


class DefineByRun:
    """Picklable define-by-run callable for ``OptunaSearch(space=...)`` (the searcher is checkpointed)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial: Any) -> None:
        chosen: dict[str, Any] = {}
        for p in self.space.params:
            if not all(chosen.get(c) in vals for c, vals in p.when):
                continue
            if p.kind == "categorical":
                enc = trial.suggest_categorical(p.name, p.encoded_choices)
                chosen[p.name] = p.decode(enc)
            elif p.kind == "float":
                chosen[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)
            else:
                chosen[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.log, step=p.step or 1)
        return None


# ------------------------------------------------------------------------------------ parsing

def _registered_names(path: str) -> list[str]:
    import importlib

    mod_name, attr = _REGISTRIES[path]
    return getattr(importlib.import_module(mod_name), attr).names()  # importing registers the plug-ins


def _check_choice_names(where: str, path: str, values: list[Any]) -> None:
    if path not in _REGISTRIES:
        return
    names = _registered_names(path)
    bad = [v for v in values if v not in names]
    if bad:
        raise ConfigError(f"{where}: key {path!r}: unknown name(s) {bad}; choose from {names}")


def _field_type(file: str, name: str) -> Any:
    if not isinstance(name, str) or "." not in name:
        raise ConfigError(
            f"{file}: parameter key {name!r} must be 'section.field' with section one of {sorted(SECTIONS)}"
        )
    section, key = name.split(".", 1)
    if section not in SECTIONS:
        raise ConfigError(f"{file}: parameter key {name!r}: unknown section {section!r}; use one of {sorted(SECTIONS)}")
    hints = typing.get_type_hints(SECTIONS[section])
    if key not in hints:
        valid = ", ".join(sorted(f.name for f in dataclasses.fields(SECTIONS[section])))
        raise ConfigError(f"{file}: parameter key {name!r}: unknown field {key!r} of {section}; valid fields: {valid}")
    return hints[key]


def _number(file: str, name: str, key: str, v: Any, kind: str) -> float | int:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "int":
        ok = ok and float(v).is_integer()
    if not ok or (isinstance(v, float) and not math.isfinite(v)):
        raise ConfigError(f"{file}: key '{name}.{key}' expects a finite {kind}, got {v!r}")
    return int(v) if kind == "int" else float(v)


def _parse_param(file: str, name: str, spec: Any, earlier: dict[str, Param]) -> Param:
    ftype = _field_type(file, name)
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{file}: key {name!r} must be a mapping like {{type: float, low: 0, high: 1}}, got {spec!r}")
    kind = spec.get("type")
    if kind not in PARAM_KEYS:
        raise ConfigError(f"{file}: key '{name}.type' must be one of {sorted(PARAM_KEYS)}, got {kind!r}")
    unknown = sorted(set(spec) - PARAM_KEYS[kind], key=str)  # keys may be of mixed types (YAML: false, 1)
    if unknown:
        raise ConfigError(f"{file}: key {name!r}: unknown option(s) {unknown} for type {kind}; valid: {sorted(PARAM_KEYS[kind])}")
    when: list[tuple[str, tuple[Any, ...]]] = []
    for cond, vals in (spec.get("when") or {}).items():
        if cond not in earlier:
            raise ConfigError(
                f"{file}: key '{name}.when' refers to {cond!r}, which is not a parameter defined above it"
            )
        vals = tuple(vals) if isinstance(vals, list) else (vals,)
        other = earlier[cond]
        if other.kind != "categorical":
            raise ConfigError(f"{file}: key '{name}.when': {cond!r} must be categorical to condition on it")
        bad = [v for v in vals if v not in other.choices]
        if bad:
            raise ConfigError(f"{file}: key '{name}.when.{cond}': value(s) {bad} not among its choices {list(other.choices)}")
        when.append((cond, vals))
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{file}: key '{name}.choices' must be a non-empty list, got {choices!r}")
        coerced = []
        for c in choices:
            ok, cv = _type_ok(c, ftype)
            if not ok:
                raise ConfigError(f"{file}: key '{name}.choices': {c!r} has the wrong type for {name} ({ftype})")
            coerced.append(cv)
        if len({json.dumps(_encode(c)) for c in coerced}) != len(coerced):
            raise ConfigError(f"{file}: key '{name}.choices' has duplicates: {choices}")
        _check_choice_names(file, name, coerced)
        return Param(name, "categorical", choices=tuple(coerced), when=tuple(when))
    # numeric
    if kind == "float" and not _type_ok(0.5, ftype)[0]:
        raise ConfigError(f"{file}: key {name!r} is not a float field ({ftype}); use type int or categorical")
    if kind == "int" and not _type_ok(1, ftype)[0]:
        raise ConfigError(f"{file}: key {name!r} is not numeric ({ftype}); use type categorical")
    for req in ("low", "high"):
        if req not in spec:
            raise ConfigError(f"{file}: key {name!r} needs '{req}'")
    low = _number(file, name, "low", spec["low"], kind)
    high = _number(file, name, "high", spec["high"], kind)
    if not low < high:
        raise ConfigError(f"{file}: key {name!r}: bad range, low ({low}) must be < high ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{file}: key '{name}.log' must be true/false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{file}: key {name!r}: log scale needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None:
        step = _number(file, name, "step", step, kind)
        if step <= 0:
            raise ConfigError(f"{file}: key '{name}.step' must be > 0, got {step}")
        if log:
            raise ConfigError(f"{file}: key {name!r}: 'step' and 'log' cannot be combined (Optuna)")
    return Param(name, kind, low=low, high=high, log=log, step=step, when=tuple(when))


def parse_space(data: Any, file: str = "<search space>") -> SearchSpace:
    """Validate a loaded YAML mapping (see module docstring for the schema)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{file}: top level must be a mapping with keys {list(TOP_KEYS)}")
    unknown = sorted(set(data) - set(TOP_KEYS), key=str)
    if unknown:
        raise ConfigError(f"{file}: unknown top-level key(s) {unknown}; valid: {list(TOP_KEYS)}")
    base_map = data.get("base") or {}
    if not isinstance(base_map, Mapping):
        raise ConfigError(f"{file}: key 'base' must be a mapping (a RunConfig: dataset, split, cf, train)")
    base = from_dict(RunConfig, base_map, where=f"{file}: base")
    for path in _REGISTRIES:  # a registered name the base config gets wrong fails here, not in every trial
        section, key = path.split(".", 1)
        _check_choice_names(f"{file}: base", path, [getattr(getattr(base, section), key)])
    params_map = data.get("params") or {}
    if not isinstance(params_map, Mapping):
        raise ConfigError(f"{file}: key 'params' must be a mapping of 'section.field' -> distribution")
    params: dict[str, Param] = {}
    for name, spec in params_map.items():
        params[name] = _parse_param(file, name, spec, params)
    asha = data.get("asha") or {}
    if not isinstance(asha, Mapping):
        raise ConfigError(f"{file}: key 'asha' must be a mapping with {sorted(ASHA_KEYS)}")
    bad = sorted(set(asha) - set(ASHA_KEYS), key=str)
    if bad:
        raise ConfigError(f"{file}: unknown key(s) {bad} in 'asha'; valid: {sorted(ASHA_KEYS)}")
    metric = asha.get("metric", DEFAULT_RUNG_METRIC)
    check_choice(RUNG_METRICS, metric, f"{file}: key 'asha.metric'")
    for k, v in asha.items():
        if ASHA_KEYS[k] is int and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ConfigError(f"{file}: key 'asha.{k}' must be a positive integer, got {v!r}")
    if asha.get("reduction_factor", 2) < 2:
        raise ConfigError(f"{file}: key 'asha.reduction_factor' must be >= 2")
    space = SearchSpace(
        path=file, base=base, params=tuple(params.values()),
        grace_period=asha.get("grace_period", 1), reduction_factor=asha.get("reduction_factor", 2),
        rung_metric=metric,
    )
    _check_extremes(space)
    return space


def _check_extremes(space: SearchSpace) -> None:
    """Push each parameter's bounds/choices through the typed configs, so the sweep can't fail late."""
    for p in space.params:
        values = list(p.choices) if p.kind == "categorical" else [p.low, p.high]
        for v in values:
            try:
                space.apply({p.name: _encode(v)})
            except ConfigError as e:
                msg = str(e).split(": ", 2)[-1]
                raise ConfigError(f"{space.path}: key {p.name!r}: value {v!r} is rejected by the config: {msg}") from None


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file, or a shipped space by name (``"synthetic"``);
    every error names the file."""
    from raysearch.config import load_yaml  # no aliases (YAML bombs), no duplicate keys, errors name the file

    path = Path(path)
    shipped = spaces_dir() / f"{path.name}.yaml"
    if not path.is_file() and path.suffix == "" and path.name == str(path) and shipped.is_file():
        path = shipped
    if not path.is_file():
        shipped_names = sorted(p.stem for p in spaces_dir().glob("*.yaml"))
        raise ConfigError(f"search-space file not found: {path} (shipped spaces: {', '.join(shipped_names)})")
    data = load_yaml(path)
    if not data:  # an empty file would silently mean "the defaults, nothing searched"
        raise ConfigError(f"{path}: empty search-space file (nothing to search); give at least 'params:'")
    return parse_space(data, str(path))


def spaces_dir() -> Path:
    """The search spaces shipped as package data (``raysearch/search_spaces``).

    Read through ``importlib.resources`` so a wheel finds them from any working directory; in a
    checkout ``raysearch/search_spaces`` is a symlink to the top-level ``search_spaces/`` (the one
    copy).  The working directory is never searched: a different file there is what ``--space`` is for.
    """
    from importlib.resources import files

    d = files("raysearch") / "search_spaces"
    if not (isinstance(d, Path) and d.is_dir()):  # e.g. a zipped install: no real folder to hand out
        raise ConfigError(f"the shipped search spaces are not a folder here ({d}); pass --space FILE")
    return d


def default_space_path(dataset: str) -> Path:
    """``search_spaces/<dataset>.yaml`` when shipped, else the one of the name before its first ``-``
    (``synthetic-tiny`` -> ``synthetic.yaml``), else ``search_spaces/default.yaml``."""
    d = spaces_dir()
    name = Path(dataset).name
    for cand in (d / f"{name}.yaml", d / f"{name.split('-')[0]}.yaml", d / "default.yaml"):
        if cand.is_file():
            return cand
    raise ConfigError(f"no search-space file for dataset {dataset!r} and no {d / 'default.yaml'}; pass --space FILE")


def sample_configs(space: SearchSpace, n: int, seed: int = 0) -> list[RunConfig]:
    """Draw ``n`` RunConfigs with a seeded random Optuna sampler (for tests, docs and dry runs)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    fn = space.define_by_run()
    out = []
    for _ in range(n):
        t = study.ask()
        fn(t)
        out.append(space.apply(t.params))
        study.tell(t, 0.0)
    return out
