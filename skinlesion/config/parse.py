"""Validating a params.yaml mapping into :class:`~skinlesion.config.params.Params`, and
the messages that say what is wrong.

Why apart from the schema: the schema says what a key may hold; this module turns pydantic's
errors into one line per problem (``train.cnn.epoch: unknown key; allowed: …``), all at once,
and adds the checks that span sections (a model section per recipe, searched keys that exist).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from skinlesion.config.params import Params
from skinlesion.config.schema import (
    RECIPE_SETTINGS,
    ParamsError,
    RecipeSettings,
    TrainSettings,
    deep_merge,
)


def parse_params(raw: Mapping[str, Any], origin: str = "params") -> Params:
    """Validate a params.yaml mapping; every problem at once, each with its key's path.

    ``origin`` names where the values came from, for the message."""
    problems: list[str] = []
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        problems += [_describe(Params, e) for e in err.errors()]
        params = None
    train = raw.get("train") if isinstance(raw, Mapping) else None
    sections: dict[str, RecipeSettings] = {}
    if isinstance(train, Mapping):
        sections, recipe_problems = _recipe_sections(train)
        problems += recipe_problems
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise ParamsError(f"{origin}: {len(problems)} problem(s):\n{listed}")
    assert params is not None
    for name, section in sections.items():
        params.train.__pydantic_extra__[name] = section  # type: ignore[index]
    problems = _space_problems(params)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise ParamsError(f"{origin}: {len(problems)} problem(s):\n{listed}")
    return params


def parse_sections(raw: Mapping[str, Any], origin: str = "params") -> Params:
    """Some sections of params.yaml, each validated as :func:`parse_params` does, and no
    other: what a pipeline step receives. Reading a section that is not here raises
    ``AttributeError``, so a step cannot read more than its declared sections, and the
    checks across sections (searched keys that exist) are the whole params' step's."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    fields = {field.alias or name: name for name, field in Params.model_fields.items()}
    for section, value in raw.items():
        name = fields.get(section)
        if name is None:
            problems.append(f"{section}: unknown section; sections: {_names(fields)}")
            continue
        model = _unwrap(Params.model_fields[name].annotation)
        try:
            values[name] = model.model_validate(value)
        except ValidationError as err:
            problems += [_describe(model, e, prefix=(section,)) for e in err.errors()]
    if isinstance(raw.get("train"), Mapping):
        recipes, recipe_problems = _recipe_sections(raw["train"])
        problems += recipe_problems
        if "train" in values:
            values["train"].__pydantic_extra__.update(recipes)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise ParamsError(f"{origin}: {len(problems)} problem(s):\n{listed}")
    return Params.model_construct(**values)


def revalidate(params: Params, raw: Mapping[str, Any], origin: str) -> Params:
    """``raw`` (``params`` changed) validated the way ``params`` was: whole, or as the
    sections a pipeline step holds."""
    return parse_params(raw, origin) if params.complete else parse_sections(raw, origin)


def for_cluster(params: Params) -> Params:
    """The parameters of a Kubeflow run: ``cluster.overrides`` merged over ``params``."""
    return parse_params(deep_merge(params.raw(), params.cluster.overrides), "cluster.overrides")


def as_params(params: Params | Mapping[str, Any]) -> Params:
    """``params`` as the typed model: library entry points accept either form."""
    return params if isinstance(params, Params) else parse_params(params)


def _recipe_sections(train: Mapping[str, Any]) -> tuple[dict[str, RecipeSettings], list[str]]:
    """The model sections of ``train`` (its keys that are not shared keys)."""
    sections: dict[str, RecipeSettings] = {}
    problems: list[str] = []
    shared = list(TrainSettings.model_fields)
    for name, value in train.items():
        if name in shared:
            continue
        if not isinstance(value, Mapping):
            problems.append(
                f"train.{name}: unknown key; allowed: {_names(shared)}, or a model section"
            )
            continue
        recipe = value.get("recipe") or name
        settings_type = RECIPE_SETTINGS.get(str(recipe))
        if settings_type is None:
            problems.append(
                f"train.{name}: no recipe named {recipe!r}; recipes: {_names(RECIPE_SETTINGS)}"
                " (name the section after one, or set its `recipe` key)"
            )
            continue
        try:
            sections[name] = settings_type.model_validate(value)
        except ValidationError as err:
            problems += [_describe(settings_type, e, prefix=("train", name)) for e in err.errors()]
    models = train.get("models")
    if isinstance(models, list):
        problems += [
            f"train.models: {m!r} has no train.{m} section" for m in models if m not in train
        ]
    return sections, problems


def _space_problems(params: Params) -> list[str]:
    """Each searched key must be a key of a stage section, and each tuned model a model
    section of ``train``."""
    problems: list[str] = []
    stages = params.stages()
    for model, section in (params.tune.__pydantic_extra__ or {}).items():
        if model not in (params.train.__pydantic_extra__ or {}):
            problems.append(f"tune.{model}: no train.{model} section to tune")
        for key in section.space:
            node: Any = stages
            for part in key.split("."):
                node = node.get(part) if isinstance(node, Mapping) else None
            if node is None or isinstance(node, Mapping):
                problems.append(f"tune.{model}.space.{key}: not a key of params.yaml")
    return problems


def _describe(root: type[BaseModel], error: Any, prefix: tuple[str, ...] = ()) -> str:
    """One validation error as ``path: what is wrong``, with the allowed keys of the
    section when the key is unknown."""
    loc = tuple(str(part) for part in error["loc"])
    path = ".".join((*prefix, *(p.rstrip("_") for p in loc)))
    if error["type"] == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        allowed = f"; allowed: {_names(parent.model_fields)}" if parent else ""
        return f"{path}: unknown key{allowed}"
    if error["type"] == "missing":
        return f"{path}: missing (params.yaml must set it)"
    return f"{path}: {error['msg']} (got {error.get('input')!r})"


def _model_at(root: type[BaseModel], loc: tuple[str, ...]) -> type[BaseModel] | None:
    """The section model found by following ``loc`` (field names) down from ``root``."""
    current: Any = root
    for key in loc:
        fields = getattr(current, "model_fields", None)
        if fields is None:
            return None
        field = fields.get(key) or next((f for f in fields.values() if f.alias == key), None)
        if field is None:
            return None
        current = _unwrap(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """The model class inside ``X | None`` or a plain annotation."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        models = [a for a in typing.get_args(annotation) if isinstance(a, type)]
        return next((a for a in models if issubclass(a, BaseModel)), annotation)
    return annotation


def _names(keys: Any) -> str:
    return ", ".join(k.rstrip("_") for k in keys)
