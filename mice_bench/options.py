"""Each command option declared once.

An option is a field of its command's configuration dataclass, declared with :func:`option`:
its flag, help, ``--help`` group, spelling on the command line, choices and whether a study
file may set it. Everything else is derived from the declarations:

* :func:`typer_command` builds the Typer command's parameters (Typer stays the command-line
  library; the signature is built with :mod:`inspect`);
* :func:`given` turns the command line's or a study file's spellings into field values;
* :func:`study_keys` / :func:`study_choices`: the keys a study table may hold, their TOML
  types and their choices;
* :func:`to_args`: the equivalent command line of a configuration (what studies print).

Spellings: ``value`` (``--depth 20``), ``list`` (``--datasets dl19,scifact``: one text,
split by the option's ``split``), ``repeat`` (``--model a --model b``), ``switch``
(``--gzip-runs/--no-gzip-runs``) and ``flag`` (``--resume``: only ever turns it on).
See docs/architecture.md, "Options".
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, List, Optional

from .errors import UsageError

__all__ = ["Display", "Option", "Pick", "ProgressBar", "SPELLINGS", "comma_split", "declared", "from_study", "given", "help_text", "option", "study_choices",
           "study_keys", "table_args", "to_args", "typer_command", "typer_params"]

SPELLINGS = ("value", "list", "repeat", "switch", "flag")
UNSET: Any = object()          # no command-line default of its own: the field's


def comma_split(text: str) -> list[str]:
    return [x.strip() for x in str(text).split(",") if x.strip()]


@dataclass(frozen=True)
class Option:
    """How one field of a command's configuration is spelled and documented."""

    help: str = ""
    flag: str = ""                  # default: --field-name
    panel: str | None = None        # the --help group
    spelling: str = "value"         # one of SPELLINGS
    type: Any = None                # the command-line value's type; default: the field's
    parse: Callable[[str], Any] | None = None    # one text -> one value (of a list)
    show: Callable[[Any], str] = str             # the inverse of parse
    split: Callable[[str], list[str]] = comma_split     # a ``list`` option's text -> texts
    choices: tuple = ()             # the valid values (study files check them)
    cli_default: Any = UNSET        # the command line's default, where not the field's
    required: bool = False
    study: bool = True              # a study file may set it (key: the flag, underscored)
    hidden: bool = False
    #: a compound option (one flag for several fields): the config -> the option's texts
    texts: Callable[[Any], list[str]] | None = None

    def __post_init__(self) -> None:
        if self.spelling not in SPELLINGS:
            raise ValueError(f"unknown spelling {self.spelling!r}; valid: {SPELLINGS}")


def option(default: Any = MISSING, *, default_factory: Any = MISSING, **kw: Any) -> Any:
    """A dataclass field that is a command option (``kw``: the fields of :class:`Option`)."""
    meta = {"option": Option(**kw)}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Declared:
    """One declared option of a configuration class."""

    name: str                       # the field
    opt: Option
    annotation: Any                 # the field's type, resolved
    field: Field

    @property
    def flag(self) -> str:
        return self.opt.flag or "--" + self.name.replace("_", "-")

    @property
    def key(self) -> str:
        """Its key in a study file."""
        return self.flag.lstrip("-").replace("-", "_")

    def field_default(self) -> Any:
        f = self.field
        if f.default is not MISSING:
            return f.default
        if f.default_factory is not MISSING:
            return f.default_factory()
        return None

    def value_type(self) -> Any:
        """The type of one command-line value."""
        if self.opt.type is not None:
            return self.opt.type
        if self.opt.spelling in ("switch", "flag"):
            return bool
        t = self.annotation
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if args and typing.get_origin(t) in (typing.Union, types.UnionType):
            t = args[0]
        if typing.get_origin(t) in (list, List):
            t = typing.get_args(t)[0] if typing.get_args(t) else str
        return t if t in (str, int, float, bool, Path) else str

    def cli_default(self) -> Any:
        """The Typer parameter's default (``...`` for a required option)."""
        o = self.opt
        if o.required:
            return ...
        if o.cli_default is not UNSET:
            return o.cli_default
        d = self.field_default()
        if d is None or o.spelling in ("switch", "flag"):
            return d
        if o.spelling == "list":
            return ",".join(o.show(x) for x in d)
        if o.spelling == "repeat":
            return [o.show(x) for x in d]
        return d if o.parse is None else o.show(d)

    def default_value(self) -> Any:
        """The value the command line gives the field when the option is left out (None:
        a value the command computes, such as the variants stored in a checkpoint)."""
        if self.opt.cli_default is not UNSET:
            d = self.opt.cli_default
            return None if d is None else self.to_value(d)
        return self.field_default()

    def to_value(self, v: Any) -> Any:
        """A command-line or study-file spelling -> the field's value."""
        o = self.opt

        def one(x: Any) -> Any:
            if o.parse is None or not isinstance(x, str):
                return x
            try:
                return o.parse(x)
            except ValueError as e:      # one line naming the option
                raise UsageError(f"{self.flag} {v!r}: {e}") from None
        if o.spelling == "list":
            items = o.split(v) if isinstance(v, str) else list(v)
            return [one(x) for x in items]
        if o.spelling == "repeat":
            return [one(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
        return one(v)

    def to_texts(self, cfg: Any) -> list[str] | None:
        """The option's texts on the equivalent command line of ``cfg`` (None: left out)."""
        o = self.opt
        if o.texts is not None:
            return o.texts(cfg) or None
        v = getattr(cfg, self.name)
        if v is None or v == self.default_value() or (o.spelling == "flag" and not v):
            return None
        return self.texts_of(v)

    def texts_of(self, v: Any) -> list:
        """The texts that spell value ``v`` (a switch or flag: ``[v]``)."""
        o = self.opt
        if o.spelling in ("switch", "flag"):
            return [bool(v)]
        if o.spelling == "list":
            return [",".join(o.show(x) for x in v)]
        if o.spelling == "repeat":
            return [o.show(x) for x in v]
        return [o.show(v)]


@dataclass
class ProgressBar:
    """A command's progress bar."""

    progress: bool = option(True, spelling="switch", study=False, panel="Output",
                            help="progress bar on stderr (only on a terminal)")


@dataclass
class Display(ProgressBar):
    """How a command shows its results: a progress bar, then a table or JSON."""

    format: str = option("table", choices=("table", "json"), study=False, panel="Output",
                         help="table | json")


@dataclass(frozen=True)
class Pick:
    """Some options of another command's configuration, declared there (a command that
    shares them: ``store build`` takes ``--doc-store`` as ``effectiveness`` does)."""

    cls: type
    names: tuple[str, ...]


def declared(cls: type | Pick) -> list[Declared]:
    """The options of configuration class ``cls`` (or those picked), in declaration order."""
    if isinstance(cls, Pick):
        return [d for d in declared(cls.cls) if d.name in cls.names]
    hints = typing.get_type_hints(cls)
    return [Declared(f.name, f.metadata["option"], hints[f.name], f) for f in fields(cls)
            if "option" in f.metadata]


def typer_params(cls: type | Pick, given_only: bool = False) -> list[inspect.Parameter]:
    """The Typer parameters of ``cls``'s options (keyword-only, named after the fields).
    ``given_only``: every option defaults to None, "not given" (a command that merges what
    was given over presets), unless it declares a ``cli_default``."""
    import typer

    out = []
    for d in declared(cls):
        o = d.opt
        t = d.value_type()
        default = d.cli_default()
        if given_only and o.cli_default is UNSET and default is not ... \
                and o.spelling != "flag":
            default = None
        if o.spelling == "repeat":
            ann: Any = List[t]
        elif o.spelling == "list":
            ann = Optional[str] if default is None else str
        else:
            ann = Optional[t] if default is None else t
        decl = f"{d.flag}/--no-{d.flag[2:]}" if o.spelling == "switch" else d.flag
        info = typer.Option(default, decl, help=help_text(o) or None, rich_help_panel=o.panel,
                            hidden=o.hidden, show_default=o.spelling != "flag")
        out.append(inspect.Parameter(d.name, inspect.Parameter.KEYWORD_ONLY, default=info,
                                     annotation=ann))
    return out


def help_text(o: Option) -> str:
    """The option's help, with its choices where the help does not list them."""
    listed = all(str(c) in o.help for c in o.choices)
    return o.help + ("" if listed else f" ({' | '.join(map(str, o.choices))})")


def typer_command(app: Any, name: str, classes: tuple[type | Pick, ...],
                  run: Callable[..., None], *, help: str,
                  wrap: Callable[[Callable], Callable] | None = None,
                  given_only: bool = False, panels: tuple[str, ...] = ()) -> Callable:
    """Register command ``name`` whose options are those of ``classes``; ``run`` receives,
    for each class, the dict of the options given (:func:`given`). ``--help`` shows the
    groups in the order of ``panels``, then in the order they first appear."""
    params: list[inspect.Parameter] = []
    owner: dict[str, type] = {}
    for cls in classes:
        for p in typer_params(cls, given_only):
            if p.name in owner:
                raise TypeError(f"option {p.name!r} declared twice, by {owner[p.name]} and "
                                f"{cls}")
            owner[p.name] = cls
            params.append(p)
    order = list(panels) + [p.default.rich_help_panel for p in params]
    params.sort(key=lambda p: order.index(p.default.rich_help_panel))

    def command(**kw: Any) -> None:
        run(*(given(cls, {k: v for k, v in kw.items() if owner[k] is cls}) for cls in classes))

    command.__signature__ = inspect.Signature(params)           # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = command.__qualname__ = name.replace("-", "_")
    command.__doc__ = help
    return app.command(name, help=help)(wrap(command) if wrap else command)


def given(cls: type | Pick, raw: dict[str, Any]) -> dict[str, Any]:
    """The options given in ``raw`` (command-line or study-file spellings, keyed by field;
    None: not given; a ``flag`` that is off: not given) as field values."""
    by_name = {d.name: d for d in declared(cls)}
    out = {}
    for k, v in raw.items():
        d = by_name[k]
        if v is None or (d.opt.spelling == "flag" and v is False):
            continue
        out[k] = d.to_value(v)
        bad = [x for x in (out[k] if isinstance(out[k], list) else [out[k]])
               if d.opt.choices and x not in d.opt.choices]
        if bad:
            raise UsageError(f"{d.flag}: unknown {d.flag[2:].replace('-', ' ')} {bad[0]!r}; "
                             f"valid: {', '.join(map(str, d.opt.choices))}")
    return out


def spell(d: Declared, texts: list) -> list[str]:
    """The command-line tokens of option ``d`` with ``texts`` (a switch: ``[on]``)."""
    if d.opt.spelling == "flag":
        return [d.flag]
    if d.opt.spelling == "switch":
        return [d.flag if texts[0] else f"--no-{d.flag[2:]}"]
    return [tok for t in texts for tok in (d.flag, t)]


def to_args(cfg: Any, command: str) -> list[str]:
    """The command line (after the program name) that gives ``cfg``: every option whose
    value is not the command line's default, in declaration order."""
    a = [command]
    for d in declared(type(cfg)):
        texts = d.to_texts(cfg)
        if texts is not None:
            a += spell(d, texts)
    return a


def table_args(cls: type, table: dict[str, Any]) -> list[str]:
    """The command-line options that a study table's option keys stand for, in its order."""
    by_key = {d.key: d for d in declared(cls) if d.opt.study}
    a: list[str] = []
    for k, v in table.items():
        d = by_key[k]
        if not (d.opt.spelling == "flag" and not v):
            a += spell(d, d.texts_of(d.to_value(v)))
    return a


_TOML = {str: (str,), int: (int,), float: (float, int), bool: (bool,), Path: (str,)}


def study_keys(cls: type, **extra: tuple) -> dict[str, tuple]:
    """The keys a study table may hold for ``cls``'s options, each with its TOML types,
    plus (overriding) the table's own ``extra`` keys."""
    out: dict[str, tuple] = {}
    for d in declared(cls):
        if not d.opt.study:
            continue
        t = _TOML.get(d.value_type(), (str,))
        if d.opt.spelling == "list":
            out[d.key] = (list, *t) if d.value_type() is not str else (list, str)
        elif d.opt.spelling == "repeat":
            out[d.key] = (*t, list)
        else:
            out[d.key] = t
    out.update(extra)
    return out


def study_choices(cls: type) -> dict[str, tuple]:
    """``{study key: valid values}`` of ``cls``'s options that have fixed choices."""
    return {d.key: d.opt.choices for d in declared(cls) if d.opt.study and d.opt.choices}


def from_study(cls: type, table: dict[str, Any]) -> dict[str, Any]:
    """A study table's option keys (as :func:`study_keys` names them) -> field values."""
    by_key = {d.key: d.name for d in declared(cls) if d.opt.study}
    return given(cls, {by_key[k]: v for k, v in table.items() if k in by_key})
