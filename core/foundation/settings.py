"""Run configuration: YAML + `key=value` overrides -> small frozen dataclasses, validated once.

A config schema is a frozen dataclass whose fields are scalars (str, int, float, bool) or nested
section dataclasses; each scalar declares its own rule through `setting(...)` (choices, bounds,
required). `build_config(schema, raw, overrides)` is generic over such schemas (classification
here; other tasks bring their own, e.g. the recsys item encoder). Overrides name a field by its
dotted path (`train.lr=1e-4`, `model.peft=lora`) or, when the name is unique across sections, by
the name alone (`lr=1e-4`); a schema may add aliases (`data=banking77` sets `data.source`). An
unknown key or a bad value fails here, naming the key and the valid ones. `to_dict` gives what a
run writes as its `config.yaml`, which `build_config` reads back to the same config.
Leaves out: picking the schema for a YAML's `task` (the app layer's registry) and running it.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from core.foundation.errors import UserError

SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class Rule:
    """What a field accepts. Bounds apply to numbers; `hint` is added to a bound's message."""

    choices: tuple = ()
    positive: bool = False  # > 0
    minimum: float | None = None  # inclusive
    below: float | None = None  # exclusive upper bound
    maximum: float | None = None  # inclusive upper bound
    hint: str = ""
    required: str = ""  # non-empty: the value may not be empty; says what to give
    check: Callable[[Any], str] | None = None  # -> why the value is bad ("" when fine)

    def problem(self, value) -> str:
        """Why `value` breaks this rule, as the tail of "bad value for 'key': <value>...", or ""."""
        hint = f" ({self.hint})" if self.hint else ""
        if self.choices and value not in self.choices:
            return f"; choose one of {', '.join(map(str, self.choices))}"
        if self.positive and value <= 0:
            return "; it must be greater than 0"
        if self.minimum is not None and value < self.minimum:
            return f"; it must be {self.minimum:g} or more"
        if self.maximum is not None and value > self.maximum:
            return f"; it must be at most {self.maximum:g}{hint}"
        if self.below is not None and value >= self.below:
            return f"; it must be below {self.below:g}{hint}"
        return self.check(value) if self.check and value != "" else ""


def setting(default, **rule):
    """A config field with its rule: `lr: float = setting(5e-5, positive=True)` (see Rule)."""
    return field(default=default, metadata={"rule": Rule(**rule)})


def text_encoding(value: str) -> str:
    try:
        codecs.lookup(value)
    except LookupError:
        return " is not a text encoding Python knows (e.g. utf-8, latin-1, cp1252)"
    return ""


# ---------------------------------------------------------------- schema walking

def leaf_fields(schema, prefix: str = "") -> dict[str, tuple[type, dataclasses.Field]]:
    """Dotted path -> (type, field) for every scalar field of `schema`, sections included."""
    out = {}
    hints = typing.get_type_hints(schema)
    for f in fields(schema):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out.update(leaf_fields(kind, f"{prefix}{f.name}."))
        elif kind in SCALARS:
            out[f"{prefix}{f.name}"] = (kind, f)
        else:
            raise TypeError(f"{schema.__name__}.{f.name}: a config field is str, int, float, bool or a "
                            f"section dataclass, not {kind!r}")
    return out


def override_keys(schema) -> dict[str, str]:
    """Every key an override may use -> the dotted path it sets: the paths themselves, each field's
    name alone when no other section has that name, and the schema's ALIASES."""
    paths = list(leaf_fields(schema))
    names = [p.rpartition(".")[2] for p in paths]
    keys = {p: p for p in paths}
    keys.update({n: p for n, p in zip(names, paths) if names.count(n) == 1 and n not in keys})
    keys.update(getattr(schema, "ALIASES", {}))
    return keys


def _short_name(schema, path: str) -> str:
    """How a user can type `path` without the section: `data.source` -> `data`."""
    aliases = [k for k, p in override_keys(schema).items() if p == path and k != path]
    return min(aliases, key=len) if aliases else path


def _unknown(key: str, where: str, valid: list[str], extra: str = "", candidates=None) -> UserError:
    close = difflib.get_close_matches(key, candidates or valid, n=1)
    maybe = f". Did you mean '{close[0]}'?" if close else ""
    return UserError(f"unknown key '{key}'{where}; valid keys: {', '.join(valid)}{extra}{maybe}")


# ---------------------------------------------------------------- coercion and checks

def _coerce(key: str, value, kind):
    if isinstance(value, (dict, list)):
        raise UserError(f"bad value for '{key}': expected one {kind.__name__}, got a "
                        f"{'mapping' if isinstance(value, dict) else 'list'}")
    if value is None and kind is str:
        return ""
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes"):
                return True
            if str(value).lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if isinstance(value, bool) or value is None:
            raise ValueError
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"bad value for '{key}': {value!r} is not a valid {kind.__name__}") from None


def rule_of(f: dataclasses.Field) -> Rule:
    return f.metadata.get("rule", Rule())


def checked(key: str, value, kind: type, f: dataclasses.Field):
    """`value` coerced to `kind` and checked against the field's rule; UserError naming `key`."""
    value = _coerce(key, value, kind)
    problem = rule_of(f).problem(value)
    if problem:
        raise UserError(f"bad value for '{key}': {value!r}{problem}")
    return value


# ---------------------------------------------------------------- building

def _flatten(schema, raw: dict, where: str, root, prefix: str = "") -> dict[str, tuple[Any, str]]:
    """YAML mapping -> {dotted path: (value, label)}; unknown keys and misplaced sections fail."""
    hints = typing.get_type_hints(schema)
    names = [f.name for f in fields(schema)]
    aliases = getattr(root, "ALIASES", {})
    out = {}
    for key, value in raw.items():
        key = str(key)
        path = f"{prefix}{key}"
        if key not in names:
            place = f" in {where} section '{prefix[:-1]}'" if prefix else f" in {where}"
            home = override_keys(root).get(key, "")
            if "." in home:  # a known key in the wrong place
                raise UserError(f"unknown key '{key}'{place}: it belongs in section '{home.rpartition('.')[0]}' "
                                f"({home})")
            raise _unknown(key, place, names)
        kind = hints[key]
        if not dataclasses.is_dataclass(kind):
            out[path] = (value, path)
        elif isinstance(value, dict) or value is None:
            out.update(_flatten(kind, value or {}, where, root, f"{path}."))
        elif path in aliases:  # `data: banking77` in a YAML means data.source
            out[aliases[path]] = (value, path)
        else:
            raise UserError(f"'{path}' in {where} is a section: a mapping of its keys "
                            f"({', '.join(f.name for f in fields(kind))}), not {value!r}")
    return out


def _construct(schema, values: dict[str, tuple[Any, str]], prefix: str = ""):
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for f in fields(schema):
        kind, path = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(kind):
            kwargs[f.name] = _construct(kind, values, f"{path}.")
        elif path in values:
            value, label = values[path]
            kwargs[f.name] = checked(label, value, kind, f)
    return schema(**kwargs)


def _check_required(schema, cfg, prefix: str = "", root=None) -> None:
    root = root or schema
    for f in fields(schema):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            _check_required(type(value), value, f"{prefix}{f.name}.", root)
        elif rule_of(f).required and value == "":
            path = f"{prefix}{f.name}"
            short = _short_name(root, path)
            alias = f" ({short}=)" if short != path else ""
            raise UserError(f"{path}{alias} is required: {rule_of(f).required}")


def build_config(schema, raw: dict | None, overrides: dict[str, str] | None = None, name: str = ""):
    """A config of `schema` (a frozen dataclass of scalars and sections) from a YAML mapping plus
    overrides (`train.lr`, a unique field name like `lr`, or an alias). `name` fills a `name`
    field the YAML leaves empty. UserError for an unknown key, a bad value or a missing one."""
    if not isinstance(raw or {}, dict):
        raise UserError(f"recipe {name or ''} must be a mapping of sections, not {type(raw).__name__}")
    values = _flatten(schema, raw or {}, f"recipe {name}" if name else "recipe", schema)
    keys = override_keys(schema)
    for key, value in (overrides or {}).items():
        if key not in keys:
            top = [f.name for f in fields(schema)]
            raise _unknown(key, "", sorted(p for p in keys if "." in p or p in top),
                           " (a name unique across sections works alone, e.g. lr=)", candidates=list(keys))
        values[keys[key]] = (value, key)
    if name and "name" in [f.name for f in fields(schema)] and not values.get("name", ("",))[0]:
        values["name"] = (name, "name")
    cfg = _construct(schema, values)
    _check_required(schema, cfg)
    return cfg


def parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override '{item}' is not key=value (e.g. epochs=2 train.lr=1e-4)")
        out[key.strip()] = value.strip()
    return out


def read_yaml_mapping(path: Path, what: str, shape: str) -> dict:
    """A YAML file that must hold a mapping (recipes, watchlists, rule files, routing tables);
    UserError naming `what` and the expected `shape` when it is missing, unparsable or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}. It is a YAML mapping {shape}.")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{what} {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{what} {path} must be a mapping {shape}")
    return raw


def read_recipe(path: Path) -> dict:
    """A recipe YAML (or a run's config.yaml) as a dict, before any schema is applied."""
    return read_yaml_mapping(path, "recipe", "of settings and sections (task, mode, data, model, train, ...)")


def load_config_file(schema, path: Path, overrides: dict[str, str] | None = None, name: str = ""):
    return build_config(schema, read_recipe(path), overrides, name or Path(path).stem)


def to_dict(cfg) -> dict:
    """Nested plain dict (what a run saves as config.yaml); `build_config` reads it back unchanged."""
    return dataclasses.asdict(cfg)
