"""Named registries and the factory that builds components from YAML mappings.

A component is any class or function registered under a name::

    from ebmssl.registry import register_energy

    @register_energy("my_energy")
    class MyEnergy(Energy):
        "One line shown by ``tools/components.py``."

and built from a mapping ``{"name": "my_energy", **kwargs}``. Every failure (unknown name, unknown or
missing argument, wrong type) raises :class:`ConfigError` with one paragraph that names where the
mapping came from, the offending key, and the fix.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem, described in one paragraph: where, which key, and how to fix it."""


@dataclass(frozen=True)
class Range:
    """The accepted interval of a number, declared beside its type: ``lr: Annotated[float, Range(above=0, high=100)]``.

    ``low``/``high`` are inclusive bounds, ``above`` an exclusive lower bound; numbers must also be finite.
    The registry checks it on a component's arguments and the run schema (:mod:`ebmssl.schema`) on every
    ``train:`` / ``eval:`` / ``data:`` key, so a range is written once, where the value is declared.
    """

    low: float | None = None
    high: float | None = None
    above: float | None = None

    def problem(self, value: float) -> str | None:
        """Why ``value`` lies outside the range (None when inside)."""
        if not math.isfinite(value):
            return "it must be a finite number"
        if self.above is not None and not value > self.above:
            return f"it must be greater than {self.above}"
        if self.low is not None and value < self.low:
            return f"it must be at least {self.low}"
        if self.high is not None and value > self.high:
            return f"it must be at most {self.high:g}" if isinstance(self.high, float) else f"it must be at most {self.high}"
        return None


# the plausible ceiling of any count (steps, epochs, samples, widths): far beyond real runs, far below
# values that would exhaust memory or time (1e12)
MAX_COUNT = 10**9
Positive = Annotated[float, Range(above=0)]  # temperatures, timeouts
Count = Annotated[int, Range(low=1, high=MAX_COUNT)]


def _closest(word: str, options: Sequence[str], n: int = 3) -> list[str]:
    close = difflib.get_close_matches(word, list(options), n=n, cutoff=0.5)
    return close or sorted(options)[:n]


def _location(where: str) -> str:
    return f"{where}: " if where else ""


class Registry:
    """A mapping from names to component constructors of one kind (energy, strategy, backbone...)."""

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or kind + "s"
        self._entries: dict[str, Callable[..., Any]] = {}
        self._retired: dict[str, str] = {}

    # -- registration -------------------------------------------------------------------------
    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator that registers a class or function under ``name`` (default: its own name)."""

        def decorator(obj: T) -> T:
            key = name or getattr(obj, "__name__")
            existing = self._entries.get(key)
            if existing is not None and existing is not obj and _qualname(existing) != _qualname(obj):
                raise ValueError(
                    f"{self.kind} {key!r} is already registered by {_qualname(existing)}; "
                    f"choose another name for {_qualname(obj)}."
                )
            self._entries[key] = obj  # type: ignore[assignment]
            try:
                obj.registered_name = key  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return decorator

    def retire(self, name: str, explanation: str) -> None:
        """Remember that ``name`` was removed: looking it up raises ``explanation`` (what replaced it)."""
        self._retired[name] = explanation

    # -- lookup -------------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, Callable[..., Any]]]:
        return sorted(self._entries.items())

    def get(self, name: str, where: str = "") -> Callable[..., Any]:
        if not isinstance(name, str):
            raise ConfigError(
                f"{_location(where)}the {self.kind} name must be a string, got {name!r} "
                f"({type(name).__name__}). Write `name: <one of {', '.join(self.names()[:5])}, ...>`."
            )
        try:
            return self._entries[name]
        except KeyError:
            if name in self._retired:
                raise ConfigError(f"{_location(where)}{self.kind} {name!r} no longer exists: {self._retired[name]}") from None
            suggestions = ", ".join(_closest(name, self.names()))
            raise ConfigError(
                f"{_location(where)}unknown {self.kind} {name!r}. Closest registered {self.plural}: "
                f"{suggestions}. Fix the `name:` key, or, if {name!r} is your own component, list its "
                f"module under `imports:` so that its @register decorator runs before building "
                f"(`python tools/components.py` lists every registered {self.kind})."
            ) from None

    # -- building -----------------------------------------------------------------------------
    def build(self, spec: Mapping[str, Any] | str, where: str = "", **extra: Any) -> Any:
        """Build a component from ``{"name": ..., **kwargs}`` (or a bare name), plus ``extra`` kwargs."""
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, Mapping):
            raise ConfigError(
                f"{_location(where)}a {self.kind} must be a mapping with a `name:` key (or a bare name), "
                f"got {spec!r} ({type(spec).__name__}). Write e.g. `{{name: {self.names()[0] if self._entries else 'NAME'}}}`."
            )
        if "name" not in spec:
            raise ConfigError(
                f"{_location(where)}the {self.kind} mapping {dict(spec)!r} has no `name:` key. Add "
                f"`name:` with one of: {', '.join(self.names())}."
            )
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        kwargs.update(extra)
        factory = self.get(spec["name"], where)
        check_arguments(factory, kwargs, f"{self.kind} {spec['name']!r}", where)
        try:
            return factory(**kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"{_location(where)}{self.kind} {spec['name']!r} rejected its arguments {kwargs!r}: "
                f"{error}. Accepted arguments: {describe_signature(factory)}."
            ) from error


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _signature(factory: Callable[..., Any]) -> inspect.Signature:
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    signature = inspect.signature(target)
    params = list(signature.parameters.values())
    if inspect.isclass(factory) and params and params[0].name == "self":
        params = params[1:]
    return signature.replace(parameters=params)


def _hints(factory: Callable[..., Any]) -> dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # unresolvable forward references: skip type checks rather than fail
        return {}


def describe_signature(factory: Callable[..., Any]) -> str:
    parts = []
    hints = _hints(factory)
    for p in _signature(factory).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        text = p.name
        if p.name in hints:
            text += f": {type_name(hints[p.name])}"
        if p.default is not p.empty:
            text += f" = {p.default!r}"
        parts.append(text)
    return ", ".join(parts) if parts else "(none)"


def _ranges(tp: Any) -> tuple[Any, list[Range]]:
    """``tp`` without ``Annotated``, and the Range marks it carried."""
    if get_origin(tp) is Annotated:
        base, *extras = get_args(tp)
        return base, [e for e in extras if isinstance(e, Range)]
    return tp, []


def type_name(tp: Any) -> str:
    """A YAML user's reading of a type: ``int (>= 1, <= 1000000000)``, ``'no' | 'bf16'``, ``float | None``."""
    tp, ranges = _ranges(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(tp))
    text = _type_name(tp)
    for r in ranges:
        bounds = [f"> {r.above}" if r.above is not None else "", f">= {r.low}" if r.low is not None else "",
                  f"<= {r.high}" if r.high is not None else ""]
        text += f" ({', '.join(b for b in bounds if b)})"
    return text


def _type_name(tp: Any) -> str:
    tp, _ = _ranges(tp)
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def value_problem(value: Any, tp: Any) -> str | None:
    """Why ``value`` does not fit ``tp`` (its type, then the Range marks of an ``Annotated`` type); None if it fits."""
    if not matches_type(value, tp):
        return f"expects {type_name(tp)}, got {value!r} ({type(value).__name__})"
    base, ranges = _ranges(tp)
    if get_origin(base) in (Union, types.UnionType):  # the ranges of the member the value matched
        member = next(a for a in get_args(base) if matches_type(value, a))
        base, more = _ranges(member)
        ranges = ranges + more
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for r in ranges:
            problem = r.problem(value)
            if problem:
                return f"is {value!r}; {problem}"
    return None


def matches_type(value: Any, tp: Any) -> bool:
    """A structural check for the types YAML can produce (a bool is not a number; Literal compares types too)."""
    tp, _ = _ranges(tp)
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(matches_type(value, a) for a in get_args(tp))
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is bool:
        return isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in get_args(tp) if a is not Ellipsis]
        if origin is tuple and len(args) > 1:
            return len(value) == len(args) and all(matches_type(v, a) for v, a in zip(value, args))
        return not args or all(matches_type(v, args[0]) for v in value)
    if origin in (dict, Mapping) or tp in (dict,):
        return isinstance(value, Mapping)
    return True  # modules, tensors, callables: not checked here


def _dotted(where: str, key: str) -> str:
    """The dotted key of argument ``key`` of the component at ``where`` ("run.yaml: objective.energy" ->
    "objective.energy.key"); the bare key when ``where`` names no section."""
    section = where.rsplit(": ", 1)[-1].strip()
    return f"{section}.{key}" if section and " " not in section else key


def check_arguments(factory: Callable[..., Any], kwargs: Mapping[str, Any], what: str, where: str = "") -> None:
    """Raise ConfigError for unknown, missing or mistyped keyword arguments of ``factory``."""
    signature = _signature(factory)
    params = signature.parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    accepted = [p.name for p in params.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for key in kwargs:
        if key not in params and not accepts_any:
            raise ConfigError(
                f"{_location(where)}{what} has no argument {key!r}. Did you mean "
                f"{' or '.join(repr(c) for c in _closest(key, accepted))}? Accepted arguments: "
                f"{describe_signature(factory)}."
            )
    missing = [
        p.name
        for p in params.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in kwargs
    ]
    if missing:
        raise ConfigError(
            f"{_location(where)}{what} is missing the required argument(s) {', '.join(map(repr, missing))}. "
            f"Add them under the component's mapping. Accepted arguments: {describe_signature(factory)}."
        )
    hints = _hints(factory)
    for key, value in kwargs.items():
        problem = value_problem(value, hints[key]) if key in hints else None
        if problem:
            raise ConfigError(
                f"{_location(where)}`{_dotted(where, key)}` ({what} argument) {problem}. Fix the value of `{key}:`. "
                f"Accepted arguments: {describe_signature(factory)}."
            )


def first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else "(no docstring)"


ENERGIES = Registry("energy", "energies")
STRATEGIES = Registry("collapse strategy", "collapse strategies")
BACKBONES = Registry("backbone")
HEADS = Registry("head")
DATASETS = Registry("dataset")
VIEWS = Registry("view pipeline")
OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")
ARCHITECTURES = Registry("architecture")
TARGETS = Registry("target branch", "target branches")
LATENT_REGULARISERS = Registry("latent regulariser")  # the capacity limit of a latent-variable model's z
PATCH_TERMS = Registry("patch term")  # terms over token sets (ebmssl.energies.tokens)

REGISTRIES: dict[str, Registry] = {
    "energies": ENERGIES,
    "strategies": STRATEGIES,
    "backbones": BACKBONES,
    "heads": HEADS,
    "datasets": DATASETS,
    "views": VIEWS,
    "optimizers": OPTIMIZERS,
    "schedules": SCHEDULES,
    "architectures": ARCHITECTURES,
    "targets": TARGETS,
    "latent_regularisers": LATENT_REGULARISERS,
    "patch_terms": PATCH_TERMS,
}

register_energy = ENERGIES.register
register_strategy = STRATEGIES.register
register_backbone = BACKBONES.register
register_head = HEADS.register
register_dataset = DATASETS.register
register_view = VIEWS.register
register_optimizer = OPTIMIZERS.register
register_schedule = SCHEDULES.register
register_architecture = ARCHITECTURES.register
register_target = TARGETS.register
register_latent_regulariser = LATENT_REGULARISERS.register
