"""Planning with a learned energy: choose the action sequence whose predicted outcome has the lowest energy.

An action-conditioned world model predicts the next embedding from the embeddings so far and an action,
s_{t+1} = pred(s_{<=t}, a_t). To reach a goal observation g, a planner minimises over action sequences
a_{1..H} the energy between the rolled-out prediction and the goal's embedding,

    a* = argmin_{a_1..a_H}  C(a),    C(a) = E(pred^H(s_{<=0}, a_1..a_H), enc(g))

(LeCun 2022, "A Path Towards Autonomous Machine Intelligence", section 3.1.2, "Mode-2" planning; the
cross-entropy method as in PlaNet, Hafner et al. 2019, and facebookresearch/eb_jepa's planning examples).
The functions here only see a cost: ``cost(actions) -> (B, S)`` for ``B`` independent problems and ``S``
candidate sequences each; :func:`rollout_cost` builds that cost from a model's step function, so they
name no model.

* :func:`cem_gaussian`: continuous actions. Each problem keeps a diagonal Gaussian over its (H, A)
  sequence; every iteration draws S candidates, keeps the ``elites`` cheapest and refits
  mean <- (1 - alpha) mean_elite + alpha mean, std <- (1 - alpha) std_elite + alpha std
  (Rubinstein 1999; ``alpha`` = ``smoothing``).
* :func:`cem_categorical`: discrete actions (one of ``num_actions`` per step). Each problem keeps a
  categorical distribution per step; every iteration draws S sequences, keeps the elites and refits
  p_h <- (1 - alpha) freq_elite,h + alpha p_h (the CEM for discrete problems, de Boer et al. 2005).
* :func:`gradient_plan`: continuous actions by gradient descent (Adam) on C through the model.

Every planner returns the best sequence it has evaluated (not the final mean), so more iterations never
return a worse plan; the cost of the best sequence per iteration is kept in ``history``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

Cost = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Plan:
    actions: torch.Tensor  # (B, H) long for discrete actions, (B, H, A) for continuous ones
    cost: torch.Tensor  # (B,) the cost of ``actions``
    history: list[torch.Tensor] = field(default_factory=list)  # (B,) best cost so far, one per iteration


def _check(samples: int, elites: int, iterations: int, smoothing: float) -> None:
    if not 1 <= elites <= samples:
        raise ValueError(f"need 1 <= elites <= samples, got elites={elites}, samples={samples}")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}")


def _keep_best(best: Plan | None, candidates: torch.Tensor, costs: torch.Tensor) -> Plan:
    """The cheapest of ``candidates`` (B, S, ...) per problem, merged with the best found before."""
    cheapest = costs.argmin(dim=1)
    rows = torch.arange(costs.shape[0], device=costs.device)
    actions, cost = candidates[rows, cheapest], costs[rows, cheapest]
    if best is None:
        return Plan(actions.clone(), cost.clone())
    better = cost < best.cost
    shape = (-1,) + (1,) * (actions.dim() - 1)
    return Plan(torch.where(better.view(shape), actions, best.actions), torch.where(better, cost, best.cost), best.history)


def cem_gaussian(
    cost: Cost,
    batch: int,
    horizon: int,
    action_dim: int,
    *,
    samples: int = 64,
    elites: int = 8,
    iterations: int = 10,
    init_mean: torch.Tensor | None = None,
    init_std: float = 1.0,
    min_std: float = 1e-3,
    smoothing: float = 0.0,
    low: float | None = None,
    high: float | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Plan:
    """Cross-entropy method over continuous sequences (B, H, A); ``cost`` maps (B, S, H, A) to (B, S).

    Candidates are clamped to [low, high] when given; the std never falls below ``min_std``.
    """
    _check(samples, elites, iterations, smoothing)
    shape = (batch, horizon, action_dim)
    mean = torch.zeros(shape, device=device) if init_mean is None else init_mean.to(device).expand(shape).clone()
    std = torch.full(shape, float(init_std), device=device)
    best: Plan | None = None
    history: list[torch.Tensor] = []
    for _ in range(iterations):
        noise = torch.randn((batch, samples, *shape[1:]), generator=generator, device=device)
        candidates = mean.unsqueeze(1) + std.unsqueeze(1) * noise
        if low is not None or high is not None:
            candidates = candidates.clamp(low, high)
        with torch.no_grad():
            costs = cost(candidates)
        best = _keep_best(best, candidates, costs)
        history.append(best.cost.clone())
        top = costs.topk(elites, dim=1, largest=False).indices
        elite = torch.gather(candidates, 1, top.view(batch, elites, 1, 1).expand(-1, -1, horizon, action_dim))
        mean = (1 - smoothing) * elite.mean(dim=1) + smoothing * mean
        std = ((1 - smoothing) * elite.std(dim=1, correction=0) + smoothing * std).clamp(min=min_std)
    assert best is not None
    best.history = history
    return best


def cem_categorical(
    cost: Cost,
    batch: int,
    horizon: int,
    num_actions: int,
    *,
    samples: int = 64,
    elites: int = 8,
    iterations: int = 10,
    smoothing: float = 0.3,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Plan:
    """Cross-entropy method over discrete sequences (B, H) of action indices; ``cost`` maps (B, S, H) to (B, S).

    Starts from the uniform distribution at every step; ``smoothing`` > 0 keeps every action's probability
    positive, so the search never freezes on an early elite set.
    """
    _check(samples, elites, iterations, smoothing)
    if num_actions < 1:
        raise ValueError(f"num_actions must be at least 1, got {num_actions}")
    probs = torch.full((batch, horizon, num_actions), 1.0 / num_actions, device=device)
    best: Plan | None = None
    history: list[torch.Tensor] = []
    for _ in range(iterations):
        flat = probs.reshape(batch * horizon, num_actions)
        draws = torch.multinomial(flat, samples, replacement=True, generator=generator)  # (B*H, S)
        candidates = draws.view(batch, horizon, samples).transpose(1, 2).contiguous()  # (B, S, H)
        with torch.no_grad():
            costs = cost(candidates)
        best = _keep_best(best, candidates, costs)
        history.append(best.cost.clone())
        top = costs.topk(elites, dim=1, largest=False).indices
        elite = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, horizon))  # (B, elites, H)
        frequency = torch.nn.functional.one_hot(elite, num_actions).float().mean(dim=1)  # (B, H, K)
        probs = (1 - smoothing) * frequency + smoothing * probs
    assert best is not None
    best.history = history
    return best


def gradient_plan(
    cost: Cost,
    init: torch.Tensor,
    *,
    steps: int = 100,
    lr: float = 0.1,
    low: float | None = None,
    high: float | None = None,
) -> Plan:
    """Adam on continuous sequences ``init`` (B, H, A); ``cost`` maps (B, 1, H, A) to (B, 1) and must be
    differentiable in the actions. Actions are clamped to [low, high] after every step when given."""
    actions = init.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([actions], lr=lr)
    best: Plan | None = None
    history: list[torch.Tensor] = []
    for _ in range(max(1, steps)):
        value = cost(actions.unsqueeze(1))
        best = _keep_best(best, actions.detach().unsqueeze(1), value.detach())
        history.append(best.cost.clone())
        optimiser.zero_grad(set_to_none=True)
        value.sum().backward()
        optimiser.step()
        if low is not None or high is not None:
            with torch.no_grad():
                actions.clamp_(low, high)
    with torch.no_grad():
        best = _keep_best(best, actions.detach().unsqueeze(1), cost(actions.unsqueeze(1)))
    history.append(best.cost.clone())
    best.history = history
    return best


def rollout_cost(
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    goal: torch.Tensor,
    energy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Cost:
    """The planning cost of a model: roll ``step`` through the candidate actions, score the end against the goal.

    ``step(state, action) -> next state`` advances a batch of states (M, ...) by one action (M,) or (M, A);
    ``start`` (B, ...) is each problem's state after its context (e.g. its context embeddings (B, T, D));
    ``goal`` (B, D) the goal embedding; ``energy(prediction, target) -> (M,)`` the model's energy. The state
    is whatever ``step`` carries (a growing context, a recurrent state): the final state's last embedding,
    ``state[:, -1]`` for a (M, T, D) context or the state itself for (M, D), is scored.
    """

    def cost(actions: torch.Tensor) -> torch.Tensor:
        batch, samples, horizon = actions.shape[:3]
        state = start.repeat_interleave(samples, dim=0)
        flat = actions.reshape(batch * samples, horizon, *actions.shape[3:])
        for h in range(horizon):
            state = step(state, flat[:, h])
        final = state[:, -1] if state.dim() == 3 else state
        return energy(final, goal.repeat_interleave(samples, dim=0)).view(batch, samples)

    return cost
