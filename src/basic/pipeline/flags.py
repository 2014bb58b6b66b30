"""The flags each stage's command accepts, so that params.yaml is checked to the last key before anything runs.

params.yaml's blocks are the options of real commands: `profiles.<p>.pretrain|finetune` (and a run's own)
are `basic train`'s flags (transformers' TrainingArguments, the project's model / data / training arguments
and the BASIC arguments), `data` and `backbones` are `basic mini data|backbones`' options (mini) or
`basic checkpoints`' (full), `evaluate` is `basic evaluate`'s. `check(flags, options, path, error)` refuses
an unknown key, naming its key path and the closest option, and a value of the wrong type.

The dataclass fields are read from the source of the modules that define them (`ast`, no import), because
importing transformers' TrainingArguments would cost every `basic stage` seconds before its command starts;
tests/test_config.py checks that what is read here equals what the commands' own parsers accept.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from basic.schema import suggestion

# Where `basic train`'s HfArgumentParser dataclasses are defined (module, class); a class's own fields
# override its bases' (basic.train.TrainingArguments extends transformers').
TRAIN_ARGUMENTS = (
    ("transformers.training_args", "TrainingArguments"),
    ("basic.train", "ModelArguments"),
    ("basic.train", "DataArguments"),
    ("basic.train", "TrainingArguments"),
    ("basic.method.config", "BasicArguments"),
)
# The mini commands' options beyond their settings dataclass (basic.mini.cli).
MINI_DATA = ({"out": "Path", "seed": "int"}, ("basic.mini.world", "WorldSizes"), ())
MINI_BACKBONES = (
    {"data": "Path", "out": "Path", "seed": "int", "names": "list[str]", "prebuilt": "Path", "pack": "Path"},
    ("basic.mini.backbones", "BackboneSettings"),
    ("names",),
)

_SCALARS = {"bool": bool, "int": int, "float": float, "str": str, "Path": str, "None": type(None)}


@dataclass(frozen=True)
class Option:
    """One flag: the Python types its value may have (None: any) and whether a list is accepted."""

    types: tuple[type, ...] | None
    many: bool = False


def _source(module: str) -> Path:
    """The file of `module`, found without importing it (only its parent packages' specs)."""
    head, _, tail = module.rpartition(".")
    if head:
        spec = importlib.util.find_spec(head.split(".")[0])
        folder = Path(spec.submodule_search_locations[0]).joinpath(*head.split(".")[1:])
        path = folder / f"{tail}.py"
    else:
        path = Path(importlib.util.find_spec(module).origin)
    if not path.is_file():
        raise FileNotFoundError(f"{module}: no source file at {path}")
    return path


def _option(annotation: ast.expr) -> Option:
    """Option from a field's annotation: scalars and unions of them are checked, anything else is not."""
    many = False
    parts: list[ast.expr] = [annotation]
    types: list[type] = []
    while parts:
        node = parts.pop()
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            parts += [node.left, node.right]
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in (
            "Optional",
            "Union",
            "typing.Optional",
        ):
            inner = node.slice
            parts += list(inner.elts) if isinstance(inner, ast.Tuple) else [inner]
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in (
            "list",
            "List",
            "tuple",
            "typing.List",
        ):
            many = True
            inner = node.slice
            parts.append(inner.elts[0] if isinstance(inner, ast.Tuple) else inner)
        elif isinstance(node, ast.Constant) and node.value is None:
            types.append(type(None))
        elif ast.unparse(node) in _SCALARS:
            types.append(_SCALARS[ast.unparse(node)])
        else:
            return Option(None, many)  # an enum, dict, ...: the command itself checks the value
    return Option(tuple(types), many)


def _init_field(node: ast.AnnAssign) -> bool:
    """Whether HfArgumentParser makes a flag of this field (not private, not `field(init=False)`)."""
    if not isinstance(node.target, ast.Name) or node.target.id.startswith("_"):
        return False
    call = node.value
    if isinstance(call, ast.Call) and ast.unparse(call.func) in ("field", "dataclasses.field"):
        return not any(
            k.arg == "init" and isinstance(k.value, ast.Constant) and k.value.value is False
            for k in call.keywords
        )
    return True


@cache
def dataclass_options(module: str, cls: str) -> dict[str, Option]:
    """The init fields of dataclass `cls` in `module` (its own body only), read from the source."""
    tree = ast.parse(_source(module).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return {
                n.target.id: _option(n.annotation)
                for n in node.body
                if isinstance(n, ast.AnnAssign) and _init_field(n)
            }
    raise LookupError(f"{module}: no class {cls}")


@cache
def train_options() -> dict[str, Option]:
    """Every flag of `basic train`."""
    options: dict[str, Option] = {}
    for module, cls in TRAIN_ARGUMENTS:
        options.update(dataclass_options(module, cls))
    return options


def _mini_options(
    extra: dict[str, str], settings: tuple[str, str], skip: tuple[str, ...]
) -> dict[str, Option]:
    options = {name: _option(ast.parse(annotation, mode="eval").body) for name, annotation in extra.items()}
    for name, option in dataclass_options(*settings).items():
        if name not in skip:
            options[name.replace("_", "-")] = option
    return options


def mini_data_options() -> dict[str, Option]:
    """Every option of `basic mini data`, by its flag name (`bench-questions`)."""
    return _mini_options(*MINI_DATA)


def mini_backbones_options() -> dict[str, Option]:
    """Every option of `basic mini backbones`, by its flag name."""
    return _mini_options(*MINI_BACKBONES)


def parser_options(parser) -> dict[str, Option]:
    """The long options of an argparse parser, by name without `--` (a light parser: built, not run)."""
    options = {}
    for action in parser._actions:  # argparse has no public listing of its actions
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                takes_value = action.nargs != 0
                kind = (action.type,) if action.type in (int, float) else (str,) if takes_value else (bool,)
                options[flag[2:]] = Option(kind, action.nargs in ("+", "*"))
    return options


def check(flags: Mapping[str, Any], options: Mapping[str, Option], path: str, error: type[Exception]) -> None:
    """Every key of `flags` is one of `options`, with a value of its type; else `error` naming the key path."""
    for name, value in flags.items():
        where = f"{path}.{name}"
        if name not in options:
            raise error(
                f"{where}: unknown key{suggestion(name, options)} (not an option of the command it is passed to)"
            )
        option = options[name]
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not option.many:
            raise error(f"{where}: expected one value, got the list {value!r}")
        if value is None or option.types is None:
            continue
        for v in values:
            ok = isinstance(v, option.types) and not (isinstance(v, bool) and bool not in option.types)
            if not ok and float in option.types and isinstance(v, int) and not isinstance(v, bool):
                ok = True
            if not ok:
                names = " or ".join(t.__name__ for t in option.types)
                raise error(f"{where}: expected {names}, got {v!r}")
