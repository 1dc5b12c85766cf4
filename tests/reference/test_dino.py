"""DINO exactness: the `dino` config against facebookresearch/dino (main_dino.py ``DINOLoss``).

Reference (rewritten from ``DINOLoss.forward`` / ``update_center``): student logits of all crops over
the student temperature, teacher probabilities ``softmax((t - center) / temp[epoch])`` of the 2 global
crops (detached), ``temp`` from ``concat(linspace(warmup, final, warmup_epochs), final...)`` indexed by
integer epoch; the loss sums ``mean_b sum_k -q log_softmax(s_v)`` over (teacher crop iq, student crop
v != iq) and divides by the number of terms; then ``center <- m center + (1 - m) mean(teacher logits)``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import ebmssl
from ebmssl import load_config
from ebmssl.strategies import Progress

TOL = 1e-6


class ReferenceDINOLoss:
    """The official loss in float64, kept independent of ebmssl."""

    def __init__(self, out_dim, ncrops, warmup_teacher_temp, teacher_temp, warmup_epochs, nepochs,
                 student_temp=0.1, center_momentum=0.9):
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.ncrops = ncrops
        self.center = torch.zeros(1, out_dim, dtype=torch.float64)
        self.schedule = np.concatenate(
            (np.linspace(warmup_teacher_temp, teacher_temp, warmup_epochs), np.ones(nepochs - warmup_epochs) * teacher_temp)
        )

    def __call__(self, student_output, teacher_output, epoch):
        student = (student_output / self.student_temp).chunk(self.ncrops)
        temp = float(self.schedule[epoch])
        teacher = F.softmax((teacher_output - self.center) / temp, dim=-1).detach().chunk(2)
        total, terms = 0.0, 0
        for iq, q in enumerate(teacher):
            for v in range(len(student)):
                if v == iq:
                    continue
                total = total + torch.sum(-q * F.log_softmax(student[v], dim=-1), dim=-1).mean()
                terms += 1
        total = total / terms
        with torch.no_grad():  # update_center, one process
            batch_center = teacher_output.sum(dim=0, keepdim=True) / len(teacher_output)
            self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)
        return total


def dino_objective(out_dim: int, warmup_temp: float = 0.04, final_temp: float = 0.04, warmup_epochs: int = 0):
    config = copy.deepcopy(load_config("dino", "methods"))
    centering = config["objective"]["strategies"][0]
    assert centering["name"] == "dino_centering"
    centering.update(output_dim=out_dim, teacher_temperature=final_temp,
                     warmup_teacher_temperature=warmup_temp, warmup_epochs=warmup_epochs)
    objective = ebmssl.build_objective(config).double()
    objective.train()
    return objective


def _views(ncrops: int, n: int, k: int, seed: int, scale: float):
    g = torch.Generator().manual_seed(seed)
    student = [(scale * torch.randn(n, k, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(ncrops)]
    teacher = [(scale * torch.randn(n, k, generator=g, dtype=torch.float64) + 0.5) for _ in range(2)]
    return student, teacher


def _check_steps(ncrops, n, k, seed, scale=1.0, warmup=(0.04, 0.04, 0), epochs=(0, 0, 0), nepochs=10):
    warmup_temp, final_temp, warmup_epochs = warmup
    objective = dino_objective(k, warmup_temp, final_temp, warmup_epochs)
    reference = ReferenceDINOLoss(k, ncrops, warmup_temp, final_temp, warmup_epochs, nepochs)
    centering = objective.strategies[0]
    for step, epoch in enumerate(epochs):
        student, teacher = _views(ncrops, n, k, seed + step, scale)
        objective.set_progress(Progress(step=step, total_steps=len(epochs), epoch=epoch + 0.5, total_epochs=nepochs))
        out = objective(online=student, target=[t.clone().requires_grad_() for t in teacher])
        ours = torch.autograd.grad(out.loss, student)
        expected = reference(torch.cat(student), torch.cat(teacher), epoch)
        theirs = torch.autograd.grad(expected, student)
        torch.testing.assert_close(out.loss, expected, rtol=TOL, atol=TOL)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)
        assert centering.temperature() == pytest.approx(float(reference.schedule[epoch]), abs=1e-12)
        torch.testing.assert_close(centering.center, reference.center, rtol=TOL, atol=1e-9)


@pytest.mark.parametrize("ncrops,n,k", [(2, 4, 16), (4, 8, 32), (10, 3, 65), (3, 16, 7)])
def test_dino_value_gradient_and_center(ncrops: int, n: int, k: int) -> None:
    _check_steps(ncrops, n, k, seed=ncrops * 1000 + n * 10 + k)


def test_dino_teacher_temperature_warmup() -> None:
    # warm-up 0.04 -> 0.07 over 4 epochs, then 0.07; losses and centers follow over consecutive steps
    _check_steps(4, 6, 12, seed=3, warmup=(0.04, 0.07, 4), epochs=(0, 1, 2, 3, 4, 7), nepochs=8)


def test_dino_single_warmup_epoch() -> None:
    _check_steps(3, 5, 9, seed=11, warmup=(0.03, 0.05, 1), epochs=(0, 1, 2), nepochs=4)


def test_dino_eval_mode_leaves_center() -> None:
    objective = dino_objective(8)
    objective.eval()
    student, teacher = _views(3, 4, 8, 0, 1.0)
    objective(online=student, target=teacher)
    assert torch.equal(objective.strategies[0].center, torch.zeros(1, 8, dtype=torch.float64))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(ncrops=st.integers(2, 6), n=st.integers(1, 12), k=st.integers(2, 40), seed=st.integers(0, 2**16),
       scale=st.sampled_from([0.01, 1.0, 5.0]))
def test_dino_random_shapes(ncrops: int, n: int, k: int, seed: int, scale: float) -> None:
    _check_steps(ncrops, n, k, seed, scale, epochs=(0, 0))
