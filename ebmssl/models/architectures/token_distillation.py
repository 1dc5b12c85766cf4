"""Masked token self-distillation: iBOT and DINOv2 (``model.architecture: token_distillation``).

Energy view (docs/design.md, "Energies over token sets"): the image-level energy compares the student's class
outputs of every crop with the EMA teacher's of the global crops (DINO's term); the patch-level energy compares
the student's outputs at the masked patches of each global crop with the teacher's outputs at the same patches
of the unmasked crop (``ibot_patch``); KoLeo acts on the student's pooled backbone features (DINOv2).

iBOT (Zhou et al. 2022; github.com/bytedance/ibot ``main_ibot.py``, ``models/vision_transformer.py``) and
DINOv2 (Oquab et al. 2023; github.com/facebookresearch/dinov2 ``dinov2/train/ssl_meta_arch.py``)::

    model:
      architecture: token_distillation
      backbone: {name: vit, variant: vit_small, image_size: 224, patch_size: 16, pool: cls}
      head: {name: dino_head, output_dim: 8192, ...}       # class head (the DINO head)
      patch_head: shared                                   # or a head spec: DINOv2's separate iBOT head
      masks: {ratio: [0.1, 0.5], probability: 1.0}         # iBOT/BEiT blocks (models/masking.py)
      patch_tokens: all                                    # or masked: the patch heads on masked slots only
      target: {name: ema, momentum: 0.996, final_momentum: 1.0, schedule: cosine}

A step, with G global views of N images and any number of local views:

* masks: :func:`ebmssl.models.masking.ibot_block_masks` draws (G N, T) block masks for the global views from
  the batch's generator (one draw, view-major rows), on the device; local views are never masked;
* student (:class:`~ebmssl.models.architectures.token_branch.TokenBranch`): the global views with the mask
  token at the masked patches (one call), the local views whole (one call per resolution); class head on the
  pooled features of every view; patch head (or the shared class head) on the global views' patch tokens;
* teacher: the one EMA copy of the student branch (:class:`ebmssl.models.target.EMATarget`), on the unmasked
  global views, without gradient: class head on the pooled features, patch head on the patch tokens;
* objective: ``online`` = the student's class outputs of every view, ``target`` = the teacher's of the global
  views, ``tokens`` = TokenSets(online = the student's patch outputs of the global views, target = the
  teacher's, masks, online_features = the student's pooled backbone features of the global views, DINOv2's
  KoLeo input).

``patch_tokens: masked`` (DINOv2's layout) puts only the masked images' masked-token slots through both
patch heads (:func:`ebmssl.models.masking.masked_token_slots`: the round(p G N) masked crops of the G global
views x floor(high ratio T) slots, chosen on the device with static shapes and regrouped into G chunks), as
DINOv2 computes its iBOT head on the masked tokens only:
at DINOv2's masks (p 0.5, ratio up to 0.5) a quarter of the tokens, the heads' largest tensors shrinking
alike. The loss is unchanged (checked against ``all`` in float64); it needs patch terms that read the masked
tokens only (``masked_tokens_suffice``: iBOT's term with Sinkhorn-Knopp or a masked centre, KoLeo), and
refuses iBOT's official centre over every teacher token.

Deviations: with ``pool: mean`` (a ViT without class token, as the shared ViT budget's) the "class" features
are the mean final patch token; the trainer's online probe reads the student's pooled features of the first
global view, masked; the masks are per process (drawn from (seed, step, micro, process)): two processes draw
other masks than one process on the global batch, as MAE's and I-JEPA's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ebmssl.energies.tokens import TokenSets
from ebmssl.models.architectures.base import Architecture, LearnerOutput, default_generator
from ebmssl.models.architectures.jepa import build_vit_encoder
from ebmssl.models.architectures.token_branch import TokenBranch, bind_token_width, build_block_mask_spec
from ebmssl.models.build import build_heads
from ebmssl.models.masking import BlockMaskSpec, gather_tokens, ibot_block_masks, masked_token_slots
from ebmssl.models.target import EMATarget, build_target
from ebmssl.registry import ConfigError, register_architecture
from ebmssl.strategies.base import Sizes


def encode_by_size(branch: TokenBranch, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Pooled features of unmasked views, one backbone call per resolution (same-size views concatenated)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, view in enumerate(views):
        groups.setdefault(tuple(view.shape[1:]), []).append(index)
    pooled: list[torch.Tensor | None] = [None] * len(views)
    for indices in groups.values():
        features, _ = branch.encode(torch.cat([views[i] for i in indices]))
        for i, chunk in zip(indices, features.chunk(len(indices))):
            pooled[i] = chunk
    return pooled  # type: ignore[return-value]


class TokenDistillation(Architecture):
    """Student :class:`TokenBranch` with block-masked global views, its EMA teacher, and the objective."""

    feeds_tokens = True

    def __init__(
        self, student: TokenBranch, objective: nn.Module, target: EMATarget, masks: BlockMaskSpec, num_global: int,
        patch_tokens: str = "all",
    ) -> None:  # fmt: skip
        super().__init__()
        self.student = student
        self.masks = masks
        self.num_global = int(num_global)
        self.patch_tokens = patch_tokens
        self.attach(objective, target)

    # -- the contract -----------------------------------------------------------------------------
    @property
    def encoder(self) -> nn.Module:
        return self.student.backbone

    @property
    def online_branch(self) -> nn.Module:
        return self.student

    @property
    def teacher(self) -> TokenBranch:
        return self.target.branch  # type: ignore[return-value]

    def embed(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The student's class-head outputs of the unmasked views (diagnostics)."""
        return [self.student.head(pooled) for pooled in encode_by_size(self.student, list(views))]

    # -- forward ----------------------------------------------------------------------------------
    def draw_masks(self, global_views: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """(G N, T) block masks of the concatenated global views, from the batch's generator, on their device."""
        grid = self.student.backbone.grid(*global_views.shape[-2:])
        masks = ibot_block_masks(default_generator(generator, global_views), global_views.shape[0], *grid, self.masks)
        return masks.to(global_views.device)

    def forward(self, views: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> LearnerOutput:
        views = list(views)
        g = self.num_global
        global_views = torch.cat(views[:g])
        masks = self.draw_masks(global_views, generator)
        student_pooled, student_patches = self.student.encode(global_views, masks)
        local_pooled = encode_by_size(self.student, views[g:]) if len(views) > g else []
        online = list(self.student.head(torch.cat([student_pooled, *local_pooled])).chunk(len(views)))
        with torch.no_grad():
            teacher_pooled, teacher_patches = self.teacher.encode(global_views)
            target = list(self.teacher.head(teacher_pooled).chunk(g))
        view_masks, num_images = list(masks.chunk(g)), None
        if self.patch_tokens == "masked":  # the masked images' masked-token slots of each view, both branches alike
            student_patches, teacher_patches, view_masks = self.select_masked(student_patches, teacher_patches, view_masks)
            num_images = global_views.shape[0] // g
        online_tokens = self.student.project_patches(student_patches)
        with torch.no_grad():
            target_tokens = self.teacher.project_patches(teacher_patches)
        tokens = TokenSets(
            online=list(online_tokens.chunk(g)),
            target=list(target_tokens.chunk(g)),
            masks=view_masks,
            online_features=list(student_pooled.chunk(g)),
            num_images=num_images,
        )
        return self.score(online, target, student_pooled.chunk(g)[0], tokens=tokens)

    def select_masked(
        self, student: torch.Tensor, teacher: torch.Tensor, masks: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Student and teacher patch tokens (G N, T, E) and per-view masks (N, T) -> the masked images' slots,
        regrouped into G equal chunks: (G R, S, E) twice and G masks (R, S) (see ``patch_tokens``).

        The masks choose round(p G N) images over all global crops together (DINOv2's ``n_samples_masked``),
        so one view may hold more of them than another: the selection is over the concatenated crops and the
        chunks mix views. Terms that qualify (``masked_tokens_suffice``) sum over tokens with the same
        per-image weight 1 / N in every view, so which chunk a row sits in does not change their value."""
        g, (n, length) = len(masks), masks[0].shape
        rows_per_chunk = -(-self.masks.masked_images(g * n) // g)  # ceil: every masked image fits
        flat = torch.cat(masks)
        rows, columns = masked_token_slots(flat, g * rows_per_chunk, self.masks.max_masked(length))
        picked = flat[rows].gather(1, columns)
        return gather_tokens(student[rows], columns), gather_tokens(teacher[rows], columns), list(picked.chunk(g))


def token_sizes(objective: nn.Module, online_dim: int, num_global: int, where: str) -> None:
    """Bind the objective's image-level widths (class head) and number of global views."""
    sizes = Sizes(online_dim=int(online_dim), target_dim=int(online_dim), num_global_views=int(num_global))
    try:
        objective.bind_sizes(sizes)
    except ValueError as error:
        raise ConfigError(f"{where}: the objective does not fit the model's widths ({sizes}): {error}") from error


@register_architecture("token_distillation")
def build_token_distillation(
    *,
    objective: nn.Module,
    num_global: int,
    in_channels: int,
    location: str = "model",
    backbone: Mapping[str, Any] | None = None,
    head: Any = None,
    patch_head: Any = "shared",
    masks: Mapping[str, Any] | None = None,
    target: Mapping[str, Any] | str | None = None,
    patch_tokens: str = "all",
) -> TokenDistillation:
    """iBOT / DINOv2: a ViT student with block-masked global views, its EMA teacher, class and patch heads."""
    where = location
    encoder = build_vit_encoder({"backbone": backbone} if backbone is not None else {}, in_channels, where, mask_token=True)
    if head is None:
        raise ConfigError(f"{where}: no `head:` (the class head). Add e.g. `head: {{name: dino_head, output_dim: 8192}}`.")
    class_head = build_heads(head, encoder.output_dim, f"{where}.head")
    if not (patch_head is None or patch_head == "shared" or isinstance(patch_head, (Mapping, list))):
        raise ConfigError(f"{where}.patch_head: expected `shared` or a head mapping, got {patch_head!r}.")
    separate = None if patch_head is None or patch_head == "shared" else build_heads(patch_head, encoder.output_dim, f"{where}.patch_head")
    mask_spec = build_block_mask_spec(masks, where)
    teacher = build_target(target if target is not None else {"name": "ema"}, f"{where}.target")
    if not isinstance(teacher, EMATarget):
        raise ConfigError(f"{where}.target: token distillation needs an EMA teacher, e.g. `target: {{name: ema, momentum: 0.996}}`.")
    if num_global < 1:
        raise ConfigError(f"{where}: token distillation needs at least one global view.")
    check_patch_tokens(patch_tokens, objective, where)
    student = TokenBranch(encoder, class_head, separate)
    token_sizes(objective, class_head.output_dim, num_global, where)
    bind_token_width(objective, student.patch_dim)
    return TokenDistillation(student, objective, teacher, mask_spec, num_global, patch_tokens)


def check_patch_tokens(patch_tokens: Any, objective: nn.Module, where: str) -> None:
    """``patch_tokens: all | masked``; ``masked`` only with patch terms that read the masked tokens alone."""
    if patch_tokens not in ("all", "masked"):
        raise ConfigError(f"{where}.patch_tokens: expected `all` or `masked`, got {patch_tokens!r}.")
    names, terms = getattr(objective, "patch_term_names", []), getattr(objective, "patch_terms", [])
    unfit = [name for name, term in zip(names, terms) if not term.masked_tokens_suffice]
    if patch_tokens == "masked" and unfit:
        raise ConfigError(
            f"{where}.patch_tokens: masked hands the patch terms the masked tokens only, but {', '.join(unfit)} also "
            f"reads unmasked ones (e.g. ibot_patch's centre over every teacher token, center_tokens: all). Use "
            f"`patch_tokens: all`, or `centering: sinkhorn` / `center_tokens: masked` on the term."
        )
