"""The objective: one energy plus a weighted list of collapse-prevention strategies.

``loss = scale * (energy_weight * reduce_pairs(E.term(online_i, target_j)) + sum_s weight_s * term_s
+ sum_p weight_p * patch_term_p(tokens))``

where the strategies' ``transform`` hooks run first, in the listed order, and ``terms`` holds each
weighted contribution (so ``sum(terms.values()) == loss``). The patch terms (``patch_terms:``, registered
in ``PATCH_TERMS``; :mod:`ebmssl.energies.tokens`) compare token sets that the architecture passes as
``tokens=``; without patch terms the image-level path is unchanged. Whether the whole method (this objective
together with its architecture) can collapse is checked when the architecture is built
(:func:`ebmssl.models.collapse_guard.check_collapse`); see docs/design.md.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ebmssl.config import load_config
from ebmssl.energies.base import Energy
from ebmssl.energies.tokens import PatchTerm, TokenSets
from ebmssl.registry import ENERGIES, PATCH_TERMS, STRATEGIES, ConfigError, check_arguments
from ebmssl.schema import OBJECTIVE_KEYS, TOP_LEVEL_KEYS, check_keys
from ebmssl.strategies.base import FAMILIES, Pair, Progress, Sizes, Strategy, ViewBatch


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    batch: ViewBatch | None = None  # the strategies' view batch (None in a learner's output: see LearnerOutput)


def resolve_pairs(spec: str | Sequence[Sequence[int]], num_online: int, num_target: int) -> list[Pair]:
    """``"cross"``: every (i, j) with i != j (online view i against target view j); or an explicit list."""
    if spec == "cross":
        pairs = [(i, j) for j in range(num_target) for i in range(num_online) if i != j]
    elif spec == "cross_unordered":
        pairs = [(i, j) for i in range(num_online) for j in range(num_target) if i < j]
    else:
        pairs = [(int(i), int(j)) for i, j in spec]
    for i, j in pairs:
        if not (0 <= i < num_online and 0 <= j < num_target):
            raise ValueError(
                f"pair ({i}, {j}) is out of range for {num_online} online and {num_target} target views"
            )
    if not pairs:
        raise ValueError(f"no view pairs for pairs={spec!r} with {num_online} online and {num_target} target views")
    return pairs


class Objective(nn.Module):
    """An energy and a list of collapse-prevention strategies (see the module docstring)."""

    def __init__(
        self,
        energy: Energy,
        strategies: Sequence[Strategy] = (),
        weights: Sequence[float] | None = None,
        energy_weight: float = 1.0,
        pairs: str | Sequence[Sequence[int]] = "cross",
        pair_reduction: Literal["mean", "sum"] = "mean",
        scale: float = 1.0,
        allow_collapse: bool = False,
        names: Sequence[str] | None = None,
        source: str = "<objective>",
        patch_terms: Sequence[PatchTerm] = (),
        patch_weights: Sequence[float] | None = None,
        patch_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.energy = energy
        self.strategies = nn.ModuleList(strategies)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.strategies)
        self.energy_weight = float(energy_weight)
        self.pairs = pairs
        self.pair_reduction = pair_reduction
        self.scale = float(scale)
        self.allow_collapse = allow_collapse
        self.term_names = _unique_names(names or [getattr(s, "registered_name", type(s).__name__) for s in strategies])
        self.source = source
        self.patch_terms = nn.ModuleList(patch_terms)
        self.patch_weights = list(patch_weights) if patch_weights is not None else [1.0] * len(self.patch_terms)
        self.patch_term_names = _unique_names(
            patch_names or [getattr(t, "registered_name", type(t).__name__) for t in patch_terms]
        )
        self._pairs_cache: dict[tuple[str, int, int], list[Pair]] = {}

    def _resolved_pairs(self, num_online: int, num_target: int) -> list[Pair]:
        """:func:`resolve_pairs` for these view counts, computed once per count (a copy: strategies may edit it)."""
        if torch.compiler.is_compiling():
            # traced into constants once; filling the cache while tracing would be guarded on and recompile
            return resolve_pairs(self.pairs, num_online, num_target)
        key = (str(self.pairs), num_online, num_target)  # the spec too: `pairs` may be reassigned
        if key not in self._pairs_cache:
            self._pairs_cache[key] = resolve_pairs(self.pairs, num_online, num_target)
        return list(self._pairs_cache[key])

    def set_progress(self, progress: Progress) -> None:
        for strategy in self.strategies:
            strategy.set_progress(progress)
        for term in self.patch_terms:
            term.set_progress(progress)

    def bind_sizes(self, sizes: Sizes) -> None:
        """Hand the architecture's widths and number of global views to the strategies (and the energy)."""
        for component in (self.energy, *self.strategies, *self.patch_terms):
            bind = getattr(component, "bind_sizes", None)
            if bind is not None:
                bind(sizes)

    def nonfinite_hints(self) -> list[str]:
        """The strategies' likely causes of non-finite steps (``Strategy.nonfinite_hint``), for the trainer's error."""
        return [f"{name}: {hint}" for name, strategy in zip(self.term_names, self.strategies)
                if (hint := getattr(strategy, "nonfinite_hint", None))]  # fmt: skip

    def collapse_families(self) -> list[tuple[str, str]]:
        """(family, reason) for each strategy that prevents collapse, for the whole-method guard."""
        return [
            (family, f"{name} ({family})")
            for name, strategy in zip(self.term_names, self.strategies)
            if (family := getattr(strategy, "family", None)) in FAMILIES
            and getattr(strategy, "prevents_collapse", True)
        ] + [
            (term.family, f"{name} ({term.family}, patch term)")
            for name, term in zip(self.patch_term_names, self.patch_terms)
            if term.family in FAMILIES
        ]

    def forward(
        self,
        online: Sequence[torch.Tensor],
        target: Sequence[torch.Tensor] | None = None,
        tokens: TokenSets | None = None,
    ) -> ObjectiveOutput:
        online = list(online)
        if len(self.patch_terms) and tokens is None:
            raise ValueError(
                f"{self.source}: the objective has patch terms ({', '.join(self.patch_term_names)}) but was called "
                f"without `tokens=`; the architecture must pass the token sets (ebmssl.energies.tokens.TokenSets)"
            )
        if not online:
            raise ValueError("objective called with no online views")
        targets = list(target) if target is not None else online
        batch = ViewBatch(
            online=online,
            target=targets,
            pairs=self._resolved_pairs(len(online), len(targets)),
            pair_reduction=self.pair_reduction,
            has_target=target is not None,
        )
        for strategy in self.strategies:
            batch = strategy.transform(batch)
        terms: dict[str, torch.Tensor] = {}
        if self.energy_weight != 0.0:
            energy_term = self.energy.pairs_term(batch)
            terms["energy"] = _scaled(energy_term, self.scale * self.energy_weight)
        for name, strategy, weight in zip(self.term_names, self.strategies, self.weights):
            value = strategy.loss(batch, self.energy)
            if value is not None:
                terms[name] = _scaled(value, self.scale * weight)
        for name, term, weight in zip(self.patch_term_names, self.patch_terms, self.patch_weights):
            terms[name] = _scaled(term.loss(tokens), self.scale * weight)
        loss = online[0].sum() * 0.0 if not terms else None
        for value in terms.values():  # sequential sums: equal to sum(terms.values()), no stack for one term
            loss = value if loss is None else loss + value
        if self.training and (len(self.strategies) or len(self.patch_terms)):
            with torch.no_grad():
                for strategy in self.strategies:
                    strategy.update(batch)
                for term in self.patch_terms:
                    term.update(tokens)
        return ObjectiveOutput(loss=loss, terms=terms, batch=batch)


def _scaled(value: torch.Tensor, factor: float) -> torch.Tensor:
    """``factor * value``, without a multiplication by 1 (bit-identical, one autograd node fewer)."""
    return value if factor == 1.0 else factor * value


def _unique_names(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        unique.append(name if count == 0 else f"{name}_{count + 1}")
        seen[name] = count + 1
    return unique


def build_objective(spec: str | Mapping[str, Any]) -> Objective:
    """Build an :class:`Objective` from a method name under ``configs/methods/``, a YAML path or a dict.

    The mapping may be a whole method config (with an ``objective:`` section) or the section itself::

        energy: {name: cosine, temperature: 0.5}
        strategies:
          - {name: infonce, negatives: all, weight: 1.0}
        pairs: cross            # or an explicit list of [online, target] view indices
        pair_reduction: sum     # how per-pair terms combine: mean | sum
        scale: 1.0              # multiplies the whole loss
        allow_collapse: false   # refuse trivially collapsing compositions
        patch_terms:            # optional: terms over token sets (the architecture passes `tokens=`)
          - {name: ibot_patch, weight: 1.0}
    """
    config = load_config(spec, "methods")
    source = str(config.get("_source", "<dict>"))
    section = config.get("objective", config)
    where = f"{source}: objective" if "objective" in config else source
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where} must be a mapping with `energy:` and `strategies:`, got {section!r}.")
    if "objective" in config:
        check_keys(section, OBJECTIVE_KEYS, "objective.", source)
    else:  # the section itself, or a whole method config without `objective:`
        for key in section:
            if key not in OBJECTIVE_KEYS and difflib.get_close_matches(str(key), ["objective"], n=1, cutoff=0.7):
                raise ConfigError(
                    f"{where}: unknown top-level key {key!r}. Did you mean 'objective'? A method config puts "
                    f"`energy:`, `strategies:`, `pairs:`... under `objective:`."
                )
        check_keys(section, (*OBJECTIVE_KEYS, *TOP_LEVEL_KEYS, "base"), "", source)
    if "energy" not in section:
        raise ConfigError(
            f"{where}: no `energy:` key. Add e.g. `energy: {{name: cosine, temperature: 0.5}}` "
            f"(registered energies: {', '.join(ENERGIES.names())})."
        )
    energy = ENERGIES.build(section["energy"], where=f"{where}.energy")
    strategies, weights, names = _build_list(section.get("strategies") or [], STRATEGIES, f"{where}.strategies")
    patch_terms, patch_weights, patch_names = _build_list(section.get("patch_terms") or [], PATCH_TERMS, f"{where}.patch_terms")
    kwargs = {k: section[k] for k in ("energy_weight", "pairs", "pair_reduction", "scale", "allow_collapse") if k in section}
    check_arguments(Objective, {"energy": energy, **kwargs}, "the objective", where)
    try:
        return Objective(
            energy, strategies, weights, names=names, source=source,
            patch_terms=patch_terms, patch_weights=patch_weights, patch_names=patch_names, **kwargs,
        )
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"{where}: {error}. Fix `pairs:` or the strategies' arguments.") from error


def _build_list(specs: Any, registry: Any, where: str) -> tuple[list[Any], list[float], list[str]]:
    """Components, weights and labels of a YAML list of ``{name: ..., weight: ..., label: ...}`` mappings."""
    if not isinstance(specs, list):
        raise ConfigError(f"{where} must be a list of `{{name: ..., weight: ...}}` mappings, got {specs!r}.")
    built, weights, names = [], [], []
    for index, item in enumerate(specs):
        item_where = f"{where}[{index}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping):
            raise ConfigError(f"{item_where} must be a mapping with `name:` (and optional `weight:`), got {item!r}.")
        item = dict(item)
        weight = item.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"{item_where}.weight expects a number, got {weight!r}. Write e.g. `weight: 1.0`.")
        label = item.pop("label", None)
        built.append(registry.build(item, where=item_where))
        weights.append(float(weight))
        names.append(label or item.get("name"))
    return built, weights, names
