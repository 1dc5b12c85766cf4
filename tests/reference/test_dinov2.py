"""DINOv2 exactness: configs/methods/dinov2.yaml against facebookresearch/dinov2's loss
(dinov2/train/ssl_meta_arch.py forward_backward; dinov2/loss/dino_clstoken_loss.py, ibot_patch_loss.py,
koleo_loss.py), written out below with its Sinkhorn-Knopp teacher (``centering: sinkhorn_knopp``), float64, value
and gradients; and its KoLeo term against lightly 1.6's ``KoLeoLoss``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import KoLeoLoss

import ebmssl
from ebmssl.energies.tokens import TokenSets
from ebmssl.strategies.base import Progress
from tests.reference._compare import assert_matches_reference
from tests.reference.test_koleo import official_koleo

DT = torch.float64


def official_sinkhorn_knopp_teacher(teacher_output, teacher_temp, n_iterations=3):
    Q = torch.exp(teacher_output / teacher_temp).t()
    B, K = Q.shape[1], Q.shape[0]
    Q = Q / torch.sum(Q)
    for _ in range(n_iterations):
        Q = Q / torch.sum(Q, dim=1, keepdim=True)
        Q = Q / K
        Q = Q / torch.sum(Q, dim=0, keepdim=True)
        Q = Q / B
    Q = Q * B
    return Q.t()


def official_dinov2(student_global, student_local, teacher_global, student_patch, teacher_patch, masks, student_cls_tokens, tt):
    n_global, n_local = 2, len(student_local)
    teacher = torch.cat([teacher_global[1], teacher_global[0]])  # the official swap of the two crops
    q = official_sinkhorn_knopp_teacher(teacher, tt).view(n_global, -1, teacher.shape[-1])
    terms = (n_global - 1) * n_global + n_local * n_global

    def dino_loss(students, teachers):
        total = 0.0
        for s in students:
            lsm = F.log_softmax(s / 0.1, dim=-1)
            for t in teachers:
                total = total - torch.sum(t * lsm, dim=-1).mean()
        return total

    local = dino_loss(student_local, list(q)) / terms if n_local else 0.0
    global_ = dino_loss([torch.cat(student_global)], [q.flatten(0, 1)]) * 2 / terms
    mask = torch.cat(masks)  # (2B, T)
    flat = mask.flatten()
    masked_teacher = torch.cat(teacher_patch).flatten(0, 1)[flat]
    q_patch = official_sinkhorn_knopp_teacher(masked_teacher, tt)
    masked_student = torch.cat(student_patch).flatten(0, 1)[flat]
    weights = (1 / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(mask)[mask].to(DT)
    ibot = -(torch.sum(q_patch * F.log_softmax(masked_student / 0.1, dim=-1), dim=-1) * weights).sum() / mask.shape[0]
    ibot = ibot * 2 * (1.0 / n_global)  # loss_scales * ibot_loss_scale
    koleo = 0.1 * sum(official_koleo(p) for p in student_cls_tokens)
    return local + global_ + 1.0 * ibot + koleo


@pytest.mark.parametrize("n,t,k,e,local", [(6, 9, 8, 5, 0), (8, 16, 12, 6, 2)])
def test_dinov2_objective_matches_official(n, t, k, e, local) -> None:
    g = torch.Generator().manual_seed(n + t + local)
    r = lambda *s: torch.randn(*s, generator=g, dtype=DT)  # noqa: E731
    objective = ebmssl.build_objective("dinov2").double().train()
    objective.set_progress(Progress(step=0, total_steps=1, epoch=40, total_epochs=100))  # tau_t = 0.07
    student_global = [r(n, k).requires_grad_() for _ in range(2)]
    student_local = [r(n, k).requires_grad_() for _ in range(local)]
    teacher_global = [r(n, k) for _ in range(2)]
    student_patch = [r(n, t, k).requires_grad_() for _ in range(2)]
    teacher_patch = [r(n, t, k) for _ in range(2)]
    masks = [torch.rand(n, t, generator=g) < 0.5 for _ in range(2)]
    masks[1][: n // 2] = False  # mask_probability 0.5: half of the images carry no mask
    cls_tokens = [r(n, e).requires_grad_() for _ in range(2)]
    tokens = TokenSets(student_patch, teacher_patch, masks, online_features=cls_tokens)
    out = objective(student_global + student_local, teacher_global, tokens=tokens)
    assert set(out.terms) == {"energy", "ibot_patch", "koleo_features"}
    expected = official_dinov2(student_global, student_local, teacher_global, student_patch, teacher_patch, masks, cls_tokens, 0.07)
    assert_matches_reference(out.loss, expected, inputs=student_global + student_local + student_patch + cls_tokens)


def test_koleo_features_matches_lightly_koleo_loss() -> None:
    g = torch.Generator().manual_seed(3)
    features = [torch.randn(10, 7, generator=g, dtype=DT).requires_grad_() for _ in range(2)]
    term = ebmssl.REGISTRIES["patch_terms"].build({"name": "koleo_features", "views": 2})
    ours = term.loss(TokenSets([], [], online_features=features))
    expected = sum(KoLeoLoss()(f) for f in features)
    assert_matches_reference(ours, expected, inputs=features)
