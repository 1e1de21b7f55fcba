"""Typed job configuration: pydantic models, YAML files and ``key.sub=value`` overrides.

Every job and app has one config class deriving from :class:`BaseConfig`. A config is
built from three layers, later ones winning: the class defaults (the embedded
defaults), an optional YAML file, and command-line overrides::

    python -m jobs.summarize config=jobs/configs/summarize/smollm2_vllm.yaml \\
        input=s3://bucket/docs output=s3://bucket/summaries engine.max_model_len=4096

Unknown keys fail loudly (``extra="forbid"``), so a typo never silently falls back
to a default.
"""

from __future__ import annotations

import importlib
import logging
import sys
import types
import typing
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

ConfigT = TypeVar("ConfigT", bound="BaseConfig")

CONFIG_FILE_KEY = "config"


class ConfigError(ValueError):
    """A config file or override that cannot be turned into a valid config."""


def validation_problems(error: ValidationError, values: Any, renames: dict[str, str] | None = None) -> str:
    """``error``'s problems, one line each, at the keys as the user wrote them: without the tag pydantic
    adds for the branch of a union chosen by ``kind`` (``paths.rag.rag.indx`` was ``paths.rag.indx``), its
    error codes and its documentation links. ``renames`` turns a location's start into the user's spelling
    (``{"applications.0.args": "app"}``)."""
    lines = []
    for problem in error.errors():
        location = user_location(values, problem["loc"])
        for start, spelling in (renames or {}).items():
            if location == start or location.startswith(start + "."):
                location = spelling + location[len(start) :]
        message = problem_message(problem)
        given = problem.get("input")
        if problem["type"] != "missing" and isinstance(given, (str, int, float, bool)):
            message += f" (given {given!r})"
        lines.append(f"  {location or '(the whole config)'}: {message}")
    return "\n".join(lines)


def problem_message(problem: dict) -> str:
    """A pydantic problem's message without the ``Value error, `` our own validators' messages get."""
    return problem["msg"].removeprefix("Value error, ")


def user_location(values: Any, location: Sequence[Any]) -> str:
    """``location`` (a pydantic error's ``loc``) without the union tags: a part that is no key of the
    value it is met in but that value's ``kind``."""
    parts, node = [], values
    for part in location:
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue
        parts.append(str(part))
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return ".".join(parts)


class InputError(ValueError):
    """Input data a job cannot use (a table without the columns it needs, nothing usable in it): the
    message says what is wrong and :func:`run_job` ends the command with it, not a traceback."""


class BaseConfig(BaseModel):
    """Base of every rayfleet config: strict, validated on assignment, documented. A section given in
    part (a YAML file's, an override's, a Serve config's ``args``) keeps its field's default for the rest
    (:func:`with_section_defaults`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @model_validator(mode="before")
    @classmethod
    def _sections_given_in_part_keep_their_defaults(cls, values: Any) -> Any:
        return with_section_defaults(cls, values) if isinstance(values, dict) else values


def parse_override(argument: str, config_class: type[BaseModel] | None = None) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and its value.

    The value is parsed as YAML so ``n=3`` is an int, ``flag=true`` a bool and ``items=[a,b]``
    a list. A field that only takes text (a path, a name) in ``config_class``, and ``config``,
    keep an unquoted value as typed: YAML would read ``out/run #1`` as ``out/run`` (``#`` starts
    a comment), ``2024.01`` as a number and ``yes`` as a boolean. Quoted, a value is YAML's.
    """
    key, separator, raw_value = argument.partition("=")
    if not separator or not key.strip():
        raise ConfigError(f"override {argument!r} is not of the form key.sub=value")
    key_path = key.strip().split(".")
    try:
        value = yaml.safe_load(raw_value) if raw_value != "" else ""
    except yaml.YAMLError:
        return key_path, raw_value
    text_field = key_path == [CONFIG_FILE_KEY] or takes_text_only(field_annotation(config_class, key_path))
    if text_field and isinstance(value, (str, int, float, bool)) and not raw_value.lstrip().startswith(("'", '"')):
        return key_path, raw_value
    return key_path, value


def field_annotation(config_class: type[BaseModel] | None, key_path: list[str]) -> Any:
    """The type of the field at ``key_path`` in a config class (through nested sections, sections by
    name such as ``paths.rag``, and a union of sections whose members that have the field agree on
    its type), or None."""
    annotation: Any = config_class
    for key in key_path:
        if typing.get_origin(annotation) is dict:  # sections by name: the key is a name
            annotation = typing.get_args(annotation)[1]
            continue
        found = [model.model_fields[key].annotation for model in _section_classes(annotation)
                 if key in model.model_fields]  # fmt: skip
        if not found or any(other != found[0] for other in found):
            return None
        annotation = found[0]
    return annotation


def _section_classes(annotation: Any) -> list[type[BaseModel]]:
    """The config section classes a field may hold: ``Section``, ``Section | None``, or a union of sections
    (``Annotated`` with a discriminator too)."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return [kind for kind in (annotation, *typing.get_args(annotation)) if _is_model(kind)]


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def takes_text_only(annotation: Any) -> bool:
    """Whether a field takes text and no number or boolean: ``str``, ``str | None``, ``str | list[str]``."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = [
        member for member in (typing.get_args(annotation) if union else (annotation,)) if member is not type(None)
    ]
    texts = [member for member in members if member in (str, Path)]
    return bool(texts) and all(member in texts or typing.get_origin(member) in (list, tuple) for member in members)


def set_nested(tree: dict[str, Any], key_path: list[str], value: Any) -> None:
    """Set ``tree[k1][k2]...[kn] = value``, creating the dicts on the way."""
    node = tree
    for key in key_path[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {'.'.join(key_path)}: {key!r} is not a section")
        node = child
    node[key_path[-1]] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read one YAML config file into a dict (an empty file is an empty dict)."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"config file not found: {path}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded


def load_config(config_class: type[ConfigT], arguments: Sequence[str] = ()) -> ConfigT:
    """Build a config from embedded defaults, an optional ``config=FILE`` and overrides.

    Args:
        config_class: the job's config class.
        arguments: command-line words, each ``key.sub=value``; ``config=FILE`` names a
            YAML file applied before the other overrides.

    Raises:
        ConfigError: on a missing or malformed file, a bad override, an unknown key
            or a value of the wrong type; the message names the offending key.
    """
    values: dict[str, Any] = {}
    overrides: list[tuple[list[str], Any]] = []
    for argument in arguments:
        key_path, value = parse_override(argument, config_class)
        if key_path == [CONFIG_FILE_KEY]:
            values = read_yaml(str(value))
        else:
            overrides.append((key_path, value))
    for key_path, value in overrides:
        set_nested(values, key_path, value)
    try:
        return config_class.model_validate(values)
    except ValidationError as error:
        raise ConfigError(f"invalid {config_class.__name__}:\n{validation_problems(error, values)}") from error


def with_section_defaults(config_class: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with each section they give in part completed from that field's own default.

    A job may default a section to other values than the section's class does (the evaluation's
    judge samples with a verdict format, the fine-tuning preset trains 40 steps where ``TrainConfig``
    says 30). Validated alone, ``judge.sampling.max_tokens=48`` would build the judge's sampling from
    the class and drop the rest; completed first, it changes only the key it names.
    """
    completed = dict(values)
    for name, field in config_class.model_fields.items():
        given = values.get(name)
        section = _section_class(field.annotation)
        if not isinstance(given, dict) or section is None:
            continue
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        base = default.model_dump(round_trip=True) if isinstance(default, BaseModel) else {}
        completed[name] = _merged(base, given)  # the section's own validation completes its sections in turn
    return completed


def _section_class(annotation: Any) -> type[BaseModel] | None:
    """The config section class a field holds (``Section`` or ``Section | None``), if any."""
    return next(iter(_section_classes(annotation)), None)


def _merged(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``given`` laid over it, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in given.items():
        merged[key] = (
            _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return merged


HELP_WORDS = ("-h", "--help")


def config_or_exit(config_class: type[ConfigT], arguments: Sequence[str]) -> ConfigT:
    """:func:`load_config` for a command's ``__main__`` block: a bad file or override ends the
    command with its message on stderr and exit status 2 (a usage error), not a traceback;
    ``-h`` or ``--help`` prints :func:`usage` and ends it with status 0."""
    if any(argument in HELP_WORDS for argument in arguments):
        print(usage(config_class))
        raise SystemExit(0)
    try:
        return load_config(config_class, arguments)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def usage(config_class: type[BaseModel]) -> str:
    """How to run the command whose config is ``config_class``: the form, the class's description and every
    setting with its default (``required`` when it has none) and description, nested sections dotted."""
    program = sys.modules[config_class.__module__].__spec__.name if config_class.__module__ in sys.modules else "..."
    lines = [f"usage: python -m {program} [config=FILE.yaml] [key.sub=value ...]", "",
             " ".join((config_class.__doc__ or "").split()), "", "settings (key = default: description):"]  # fmt: skip
    lines += _setting_lines(config_class, None, "")
    return "\n".join(lines)


def _setting_lines(config_class: type[BaseModel], defaults: BaseModel | None, prefix: str) -> list[str]:
    """One line per setting; ``defaults`` is the section as its field defaults it (a job's own values)."""
    lines = []
    for name, field in config_class.model_fields.items():
        default = getattr(defaults, name) if defaults is not None else (
            None if field.is_required() else field.get_default(call_default_factory=True))  # fmt: skip
        section = _section_class(field.annotation)
        if section is not None and isinstance(default, BaseModel):
            lines += _setting_lines(section, default, f"{prefix}{name}.")
            continue
        shown = "required" if defaults is None and field.is_required() else repr(default)
        lines.append(f"  {prefix}{name} = {shown}: {field.description or ''}")
    return lines


def importable_job(main_spec) -> ModuleType:
    """The job module imported by its name, for the ``__main__`` block of ``python -m jobs.<name>``.

    Run that way, the job's code is ``__main__``, and Ray pickles what ``__main__`` defines (a
    Train loop, a config class) by value into the workers; a pydantic class with validators does
    not survive that (``SchemaError: Error building `function-after` serializer``). Imported by
    name, the same code is pickled by reference, as a worker imports it. ``main_spec`` is the
    block's ``__spec__`` (None when run as a file path: then ``__main__`` itself).
    """
    if main_spec is None:
        return sys.modules["__main__"]
    return importlib.import_module(main_spec.name)


def run_job(main_spec, config_class_name: str) -> Any:
    """The ``__main__`` block of ``python -m jobs.<name>``: the job imported by name
    (:func:`importable_job`), INFO logging, its config class (named) from the command line
    (:func:`config_or_exit`), then what its ``main`` returns. An error that names what the user must
    change (a missing input or model: FileNotFoundError; input it cannot use: InputError; an unknown
    registry reference: RegistryError; an unusable S3 setting in the environment: StorageSettingError; an
    output that cannot be made there: OutputLocationError) ends the command with its message on stderr and
    exit status 1, not a traceback; so does an S3 request that failed (no endpoint, refused credentials)."""
    from rayfleet.registry import RegistryError
    from rayfleet.storage import OutputLocationError, StorageSettingError, s3_failure

    job = importable_job(main_spec)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_or_exit(getattr(job, config_class_name), sys.argv[1:])
    try:
        return job.main(config)
    except (FileNotFoundError, InputError, RegistryError, StorageSettingError, OutputLocationError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as error:
        problem = s3_failure(error)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(1) from None


def describe(config: BaseConfig) -> str:
    """Render a config as YAML, for logs and run metadata."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
