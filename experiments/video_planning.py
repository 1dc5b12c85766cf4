"""Planning to a goal frame with a world model's learned energy, checked against the true simulator.

A problem: a clip of the moving-item video (``ebmssl.data.video``), its first ``context`` frames as the
history and, as the goal, the frame ``horizon`` steps after the last context frame (reached in the data by
the recorded actions). A planner picks ``horizon`` actions; they are executed by the true dynamics
(``agent_step`` from the agent's position at the last context frame) and the plan succeeds when the agent
ends exactly where it is in the goal frame (several sequences can: the order of moves does not matter
away from the walls). Planners compared, with the same CEM budget (:func:`ebmssl.planning.cem_categorical`):

* ``action_model``: the action-conditioned world model; cost = E(pred^H(context, a_1..a_H), target(goal));
* ``action_free``: the deterministic (action-free) predictor with the same cost: its rollout ignores the
  actions, so every sequence costs the same and the CEM returns an arbitrary one (what planning without
  an action input can do);
* ``random``: uniform random actions;
* ``simulator``: the CEM on the true dynamics with the squared pixel distance of the rendered end frame to
  the goal frame: what the planner reaches when the model is perfect (the budget's ceiling).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch

from ebmssl.data.video.dynamics import agent_step, render
from ebmssl.planning import Plan, cem_categorical, rollout_cost


class ActionModel(Protocol):
    """What planning needs (see experiments.video_measures.WorldModel): ``predict(context (M, T, D), z,
    action (M,)) -> (M, D)`` and ``energy(prediction, target) -> (M,)``."""

    def predict(self, context: torch.Tensor, z: torch.Tensor | None = None, action: torch.Tensor | None = None) -> torch.Tensor: ...
    def energy(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...


def planning_problems(dataset: Any, context: int, horizon: int, count: int) -> dict[str, torch.Tensor]:
    """The first ``count`` clips of ``dataset`` (a ClipDataset) as problems: ``index``, the agent's
    ``start`` (n, 2) at frame ``context - 1`` and ``goal`` (n, 2) at frame ``context - 1 + horizon``,
    the goal's frame index ``goal_frame`` and the distractors' goal positions ``others`` (n, M - 1, 2)."""
    last = context - 1 + horizon
    if context < 1 or horizon < 1 or last >= dataset.frames:
        raise ValueError(f"context {context} + horizon {horizon} needs clips of more than {last} frames; they have {dataset.frames}")
    index = torch.arange(min(count, len(dataset)))
    positions = dataset.positions[index]
    return {
        "index": index, "start": positions[:, context - 1, 0], "goal": positions[:, last, 0],
        "others": positions[:, last, 1:], "goal_frame": torch.tensor(last),
    }  # fmt: skip


def execute(start: torch.Tensor, actions: torch.Tensor, speed: int, limit: int) -> torch.Tensor:
    """The agent's position (n, 2) after the actions (n, H) under the true dynamics."""
    position = start
    for h in range(actions.shape[1]):
        position = agent_step(position, actions[:, h], speed, limit)
    return position


def model_plan(
    model: ActionModel, context: torch.Tensor, goal: torch.Tensor, horizon: int, num_actions: int, settings: Mapping[str, Any],
    action_free: bool = False, generator: torch.Generator | None = None,
) -> Plan:
    """CEM over action sequences minimising E(pred^H(context, a), goal); ``context`` (B, T, D), ``goal`` (B, D).

    The rollout keeps a window of T embeddings: each step appends the prediction and drops the oldest.
    ``action_free`` rolls the predictor without actions (the deterministic, action-free baseline)."""

    def step(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        nxt = model.predict(state, None, None if action_free else action)
        return torch.cat([state[:, 1:], nxt.unsqueeze(1)], dim=1)

    cost = rollout_cost(step, context, goal, model.energy)
    return cem_categorical(
        cost, context.shape[0], horizon, num_actions, samples=int(settings.get("samples", 64)),
        elites=int(settings.get("elites", 8)), iterations=int(settings.get("iterations", 5)),
        smoothing=float(settings.get("smoothing", 0.3)), generator=generator, device=context.device,
    )  # fmt: skip


def simulator_plan(dataset: Any, problems: Mapping[str, torch.Tensor], horizon: int, settings: Mapping[str, Any], generator: torch.Generator | None = None) -> Plan:
    """CEM on the true dynamics: cost = squared pixel distance of the rendered end frame to the goal frame."""
    index, start = problems["index"], problems["start"]
    limit = dataset.canvas - dataset.items.shape[-1]
    items = dataset.items[index]  # uint8 (B, M, s, s)
    others = problems["others"]
    goal_frame = dataset.clips[index, int(problems["goal_frame"])].float()  # (B, 1, H, W)

    def cost(actions: torch.Tensor) -> torch.Tensor:  # (B, S, H) -> (B, S)
        batch, samples = actions.shape[:2]
        end = execute(start.repeat_interleave(samples, 0), actions.flatten(0, 1), dataset.speed, limit)
        positions = torch.cat([end.unsqueeze(1), others.repeat_interleave(samples, 0)], dim=1)
        frames = render(items.repeat_interleave(samples, 0), positions, dataset.canvas).float()
        return (frames - goal_frame.repeat_interleave(samples, 0)).square().flatten(1).sum(dim=1).view(batch, samples)

    return cem_categorical(
        cost, index.numel(), horizon, dataset.num_choices, samples=int(settings.get("samples", 64)),
        elites=int(settings.get("elites", 8)), iterations=int(settings.get("iterations", 5)),
        smoothing=float(settings.get("smoothing", 0.3)), generator=generator,
    )  # fmt: skip


def success_rate(dataset: Any, problems: Mapping[str, torch.Tensor], actions: torch.Tensor) -> float:
    """The fraction of problems whose actions (n, H), executed by the true dynamics, end on the goal position."""
    limit = dataset.canvas - dataset.items.shape[-1]
    end = execute(problems["start"], actions.cpu(), dataset.speed, limit)
    return float((end == problems["goal"]).all(dim=1).double().mean())


def evaluate_planning(
    dataset: Any, embeddings: Mapping[str, tuple[ActionModel, torch.Tensor, torch.Tensor]], context: int, horizon: int,
    count: int, settings: Mapping[str, Any], seed: int = 0,
) -> dict[str, Any]:
    """Success rates of every planner on the same ``count`` problems.

    ``embeddings``: planner name -> (model, clip embeddings (N, T, D) of the problems' clips from
    ``model.encode``, target embeddings (N, T, D) from ``model.target``); a name starting with
    ``action_free`` plans without actions. Adds ``random`` and ``simulator``."""
    problems = planning_problems(dataset, context, horizon, count)
    index, last = problems["index"], int(problems["goal_frame"])
    g = torch.Generator().manual_seed(seed)
    rates: dict[str, Any] = {"problems": int(index.numel()), "horizon": horizon, "context": context}
    for name, (model, encoded, targets) in embeddings.items():
        with torch.no_grad():
            plan = model_plan(model, encoded[index, :context], targets[index, last], horizon, dataset.num_choices, settings,
                              action_free=name.startswith("action_free"), generator=g)  # fmt: skip
        rates[name] = success_rate(dataset, problems, plan.actions)
    random_actions = torch.randint(dataset.num_choices, (index.numel(), horizon), generator=g)
    rates["random"] = success_rate(dataset, problems, random_actions)
    rates["simulator"] = success_rate(dataset, problems, simulator_plan(dataset, problems, horizon, settings, g).actions)
    return rates
