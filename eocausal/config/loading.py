"""Reading configuration files safely and turning validation errors into one readable line.

A configuration file must be UTF-8 YAML of at most 1 MB whose aliases add at most
10,000 values when expanded (no "billion laughs"); values echoed in messages are cut to
80 characters; ``run_dir`` must be a folder that can be written or created.
"""

from __future__ import annotations

import difflib
import reprlib
import tempfile
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from eocausal.errors import ConfigError

__all__ = ["Strict", "check_run_dir", "echo", "format_error", "load_yaml", "read_yaml", "resolver", "validate"]


class Strict(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_MAX_CONFIG_BYTES = 1_000_000
#: the most nodes that aliases (``*name``) may add to a document when expanded
_MAX_ALIAS_NODES = 10_000
_ECHO_CHARS = 80
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, _ECHO_CHARS, _ECHO_CHARS



def _clip(text: str) -> str:
    """``text`` cut to at most 80 characters, with an ellipsis when cut."""
    return text if len(text) <= _ECHO_CHARS else text[: _ECHO_CHARS - 1] + "…"


def echo(value: Any) -> str:
    """``value`` as a message may show it: at most 80 characters; large containers by type and length."""
    text = _REPR.repr(value)
    if isinstance(value, (dict, list, tuple, set)) and (len(value) > _REPR.maxlist or len(text) > _ECHO_CHARS):
        summary = f"a {type(value).__name__} of {len(value)} items"
        return f"{summary}: {text}" if len(summary) + len(text) + 2 <= _ECHO_CHARS else summary
    return _clip(text)


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside a field's annotation (``X``, ``X | None``, ``list[X]``)."""
    if get_origin(annotation) is None and isinstance(annotation, type):
        return annotation if issubclass(annotation, BaseModel) else None
    for arg in get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _unknown_key_hint(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Say which keys the section at ``loc[:-1]`` knows, or the one ``loc[-1]`` was meant to be."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model is not None else None
        model = None if field is None else _submodel(field.annotation)
    if model is None:
        return "check its spelling (see configs/demo.yaml for the known keys)"
    known = list(model.model_fields)
    key = str(loc[-1])
    close = difflib.get_close_matches(key, known, n=1) or [k for k in known if len(key) >= 3 and k.startswith(key)]
    if close:
        return f"did you mean `{close[0]}`?"
    return f"the known keys here are {', '.join(known)}"


def format_error(err: ValidationError, root: type[BaseModel]) -> str:
    """One line: the dotted path of the first offending field, what is wrong, the value (capped)."""
    errors = err.errors()
    first = errors[0]
    loc = ".".join(_clip(str(p)) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = f"unknown key; {_unknown_key_hint(root, first['loc'])}"
    elif first["type"] == "missing":
        msg = "required but missing; add it (see configs/demo.yaml for an example)"
    elif first["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif "input" in first:
        msg = f"{msg} (got {echo(first['input'])})"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    where = f"config field `{loc}`" if loc else "config"
    return f"{where}: {msg}{more}"


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried, since permissions alone do not tell)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_run_dir(run_dir: Path) -> None:
    """``run_dir`` must be a folder to write in, or one that can be created."""
    fix = "choose another `run_dir` in the config (or `--run-dir` on the command line)"
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"config field `run_dir`: {str(run_dir)!r} is a file, not a folder; {fix}")
    existing = run_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"config field `run_dir`: {str(run_dir)!r} lies under {str(existing)!r}, which is a file; {fix}"
        )
    if not _writable(existing):
        raise ConfigError(
            f"config field `run_dir`: cannot create files in {str(existing)!r} (no permission or a "
            f"read-only file system); {fix}"
        )


def _expansion(node: yaml.Node, path: Path) -> tuple[int, int]:
    """Nodes of the document once every alias is expanded, and distinct nodes (no construction)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError(
                f"config file {str(path)!r}: an alias (*name) refers to a node that contains it, "
                "which would expand without end; remove the alias"
            )
        open_nodes.add(key)
        if isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(c) for c in n.value)
        else:
            total = 1
        open_nodes.discard(key)
        sizes[key] = total
        return total

    return size(node), len(sizes)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """Where and what the YAML syntax error is, in a few words."""
    if isinstance(err, yaml.reader.ReaderError):
        code = ord(err.character) if isinstance(err.character, str) else err.character
        return f" at character {err.position}: unacceptable character #x{code:04x} ({err.reason})"
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None)
    return f"{where}: {_clip(problem)}" if problem else where


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path``, refusing huge files, non-UTF-8 text and alias bombs."""
    name = repr(str(path))
    size = path.stat().st_size
    if size > _MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {name} is {size:,} bytes, over the limit of {_MAX_CONFIG_BYTES:,} bytes for a "
            "configuration; check that this is the config file"
        )
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        byte = err.object[err.start : err.start + 1].hex()
        raise ConfigError(
            f"config file {name} is not UTF-8 text: byte 0x{byte} at offset {err.start} cannot be "
            "decoded; save the file as UTF-8"
        ) from None
    except OSError as err:
        raise ConfigError(f"config file {name} cannot be read ({err.strerror}); check its permissions") from None
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        expanded, distinct = _expansion(node, path)
        if expanded - distinct > _MAX_ALIAS_NODES:
            count = f"{expanded:,}" if expanded < 10**12 else f"about 10^{len(str(expanded)) - 1}"
            raise ConfigError(
                f"config file {name}: its aliases (*name) would expand it to {count} values, over the "
                f"limit of {_MAX_ALIAS_NODES:,} added by aliases; write the values out or use fewer aliases"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {name} is not valid YAML{_yaml_problem(err)}") from None
    except RecursionError:
        raise ConfigError(f"config file {name} is nested too deeply to be a configuration") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[Any, Path]:
    """The mapping in a configuration file (with top-level ``overrides``) and its folder."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a folder; give the YAML file (e.g. configs/demo.yaml)")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    data = read_yaml(path)
    if data is None:
        data = {}
    if isinstance(data, dict) and overrides:
        data = {**data, **overrides}
    return data, path.parent


def validate(model: type[BaseModel], data: Any, *, example: str = "configs/demo.yaml") -> Any:
    """``model`` validated from ``data``, or a :class:`ConfigError` of one line."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"config: the top level must be a mapping of keys to values (got {echo(data)}); "
            f"start from {example}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_error(err, model)) from None


def resolver(base: Path):
    """``resolve(path, field, must_exist=True)``: ``path`` made absolute against ``base``."""

    def resolve(p: Path | None, field: str, must_exist: bool = True) -> Path | None:
        if p is None:
            return None
        p = p.expanduser()
        p = p if p.is_absolute() else (base / p)
        if must_exist and not p.exists():
            raise ConfigError(f"config field `{field}`: file {str(p)!r} does not exist")
        return p

    return resolve
