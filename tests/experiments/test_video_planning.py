"""Planning on the moving-item video (experiments/video_planning.py) with stand-in models whose embedding
is the agent's position: a model that knows the dynamics plans as well as the simulator; an action-free
one does no better than chance. Tiny clips (16 px canvas, 6 px synthetic items, 24 clips)."""

from __future__ import annotations

import pytest
import torch

from ebmssl.data import build_dataset
from ebmssl.data.video.dynamics import agent_step
from experiments.video_planning import evaluate_planning, execute, planning_problems, success_rate

TINY = {"name": "moving_fashion", "num_samples": 24, "num_test_samples": 24, "frames": 6, "canvas": 16, "item_size": 6,
        "speed": 2, "num_choices": 4, "item_source": {"name": "synthetic", "channels": 1, "num_samples": 16,
        "num_test_samples": 16, "image_size": 8, "num_classes": 4}}  # fmt: skip


@pytest.fixture(scope="module")
def clips():
    return build_dataset(TINY, train=False)


class PositionModel:
    """Embedding = the agent's position; predict applies the true move (or stays put without an action)."""

    def __init__(self, speed: int, limit: int) -> None:
        self.speed, self.limit = speed, limit

    def predict(self, context, z=None, action=None):
        last = context[:, -1]
        if action is None:
            return last
        return agent_step(last.round().long(), action, self.speed, self.limit).float()

    def energy(self, prediction, target):
        return (prediction - target).square().sum(dim=-1)


def test_execute_replays_the_recorded_actions(clips):
    limit = clips.canvas - clips.items.shape[-1]
    end = execute(clips.positions[:, 0, 0], clips.actions, clips.speed, limit)
    assert torch.equal(end, clips.positions[:, -1, 0])
    problems = planning_problems(clips, context=2, horizon=3, count=10)
    assert success_rate(clips, problems, clips.actions[:10, 1:4]) == 1.0  # the data's own actions reach the goal


def test_a_model_that_knows_the_dynamics_plans_like_the_simulator(clips):
    limit = clips.canvas - clips.items.shape[-1]
    model = PositionModel(clips.speed, limit)
    embedding = clips.positions[:, :, 0].float()  # (N, T, 2)
    settings = {"samples": 128, "elites": 8, "iterations": 3}  # 16 sequences: every one is drawn
    rates = evaluate_planning(clips, {"action_model": (model, embedding, embedding), "action_free": (model, embedding, embedding)},
                              context=2, horizon=2, count=24, settings=settings)  # fmt: skip
    assert rates["problems"] == 24
    assert rates["action_model"] == 1.0 and rates["simulator"] == 1.0
    assert rates["action_free"] < 0.75 and rates["random"] < 0.75


def test_a_horizon_past_the_clip_is_refused(clips):
    with pytest.raises(ValueError, match="frames"):
        planning_problems(clips, context=3, horizon=4, count=4)  # frame 6 of a 6-frame clip
