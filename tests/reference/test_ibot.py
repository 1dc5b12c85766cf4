"""iBOT exactness: configs/methods/ibot.yaml against the official ``iBOTLoss`` (bytedance/ibot,
main_ibot.py), written out below, over two steps (the class centre and the patch centre2 move after the first),
float64, value and gradients; and its ``ibot_patch`` term against lightly 1.6's ``IBOTPatchLoss`` (which centres
with the masked teacher tokens: ``center_tokens: masked``) over two steps.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import IBOTPatchLoss

import ebmssl
from ebmssl.energies.tokens import TokenSets
from ebmssl.strategies.base import Progress
from tests.reference._compare import assert_matches_reference

DT = torch.float64


def official_ibot(student_cls, student_patch, teacher_cls, teacher_patch, masks, center, center2, tt, tt2, student_temp=0.1):
    """Returns (loss, new center, new center2), momentum 0.9, as iBOTLoss.forward / update_center."""
    teacher_cls_c = [F.softmax((t - center) / tt, dim=-1) for t in teacher_cls]
    teacher_patch_c = [F.softmax((t - center2) / tt2, dim=-1) for t in teacher_patch]
    total1 = total2 = 0.0
    n1 = n2 = 0
    for q in range(len(teacher_cls_c)):
        for v in range(len(student_cls)):
            if v == q:
                loss2 = torch.sum(-teacher_patch_c[q] * F.log_softmax(student_patch[v] / student_temp, dim=-1), dim=-1)
                mask = masks[v].float().to(DT)
                loss2 = torch.sum(loss2 * mask, dim=-1) / mask.sum(dim=-1).clamp(min=1.0)
                total2 = total2 + loss2.mean()
                n2 += 1
            else:
                loss1 = torch.sum(-teacher_cls_c[q] * F.log_softmax(student_cls[v] / student_temp, dim=-1), dim=-1)
                total1 = total1 + loss1.mean()
                n1 += 1
    cls_all, patch_all = torch.cat(teacher_cls), torch.cat(teacher_patch)
    new_center = center * 0.9 + cls_all.sum(0, keepdim=True) / len(cls_all) * 0.1
    new_center2 = center2 * 0.9 + patch_all.mean(1).sum(0, keepdim=True) / len(patch_all) * 0.1
    return total1 / n1 + total2 / n2, new_center, new_center2


def _inputs(n, t, k, local, seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=DT)  # noqa: E731
    student_cls = [r(n, k).requires_grad_() for _ in range(2 + local)]
    student_patch = [r(n, t, k).requires_grad_() for _ in range(2)]
    teacher_cls = [r(n, k) for _ in range(2)]
    teacher_patch = [r(n, t, k) for _ in range(2)]
    masks = [torch.rand(n, t, generator=g) < 0.4 for _ in range(2)]
    masks[0][0] = False  # an image without a masked patch counts 0 in the mean over images
    return student_cls, student_patch, teacher_cls, teacher_patch, masks


@pytest.mark.parametrize("n,t,k,local", [(4, 9, 8, 0), (6, 16, 12, 3)])
def test_ibot_objective_matches_official_over_two_steps(n, t, k, local) -> None:
    objective = ebmssl.build_objective("ibot").double().train()
    objective.set_progress(Progress(step=0, total_steps=10, epoch=0, total_epochs=100))
    center, center2 = torch.zeros(1, k, dtype=DT), torch.zeros(1, k, dtype=DT)
    for step in range(2):
        s_cls, s_patch, t_cls, t_patch, masks = _inputs(n, t, k, local, seed=10 * step + n)
        out = objective(s_cls, t_cls, tokens=TokenSets(s_patch, t_patch, masks))
        expected, center, center2 = official_ibot(s_cls, s_patch, t_cls, t_patch, masks, center, center2, 0.04, 0.04)
        assert set(out.terms) == {"energy", "ibot_patch"}
        assert_matches_reference(out.loss, expected, inputs=s_cls + s_patch)
    torch.testing.assert_close(objective.patch_terms[0].center, center2)
    torch.testing.assert_close(objective.strategies[0].center, center)


def test_ibot_teacher_patch_temperature_warms_up_as_the_official_schedule() -> None:
    term = ebmssl.build_objective("ibot").patch_terms[0]
    schedule = torch.linspace(0.04, 0.07, 30, dtype=DT)  # np.linspace(warmup, final, 30), then final
    for epoch in (0, 7, 29, 30, 99):
        term.set_progress(Progress(step=0, total_steps=1, epoch=epoch, total_epochs=100))
        expected = 0.07 if epoch >= 30 else float(schedule[epoch])
        assert term.current_teacher_temperature() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n,h,k", [(4, 3, 8), (5, 4, 16)])
def test_ibot_patch_matches_lightly_ibot_patch_loss(n, h, k) -> None:
    """One view, masked-token centring (lightly's = DINOv2's convention), two steps: the centre update agrees too."""
    term = ebmssl.REGISTRIES["patch_terms"].build(
        {"name": "ibot_patch", "teacher_temperature": 0.04, "center_tokens": "masked", "center_momentum": 0.9}
    ).double().train()
    reference = IBOTPatchLoss(output_dim=k, teacher_temp=0.04, student_temp=0.1, center_momentum=0.9).double()
    for step in range(2):
        g = torch.Generator().manual_seed(step + n)
        student = torch.randn(n, h * h, k, generator=g, dtype=DT).requires_grad_()
        teacher = torch.randn(n, h * h, k, generator=g, dtype=DT)
        mask = torch.rand(n, h * h, generator=g) < 0.5
        mask[-1] = False
        tokens = TokenSets([student], [teacher], [mask])
        ours = term.loss(tokens)
        flat = mask.reshape(-1)
        expected = reference(teacher.reshape(-1, k)[flat], student.reshape(-1, k)[flat], mask.reshape(n, h, h))
        assert_matches_reference(ours, expected, inputs=[student])
        term.update(tokens)
    torch.testing.assert_close(term.center, reference.center.value.to(DT))
