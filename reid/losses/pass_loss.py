"""PASS loss: DINO on [CLS] plus part-token self-distillation with one centre per part
(Zhu et al., "PASS: Part-Aware Self-Supervised Pre-Training for Person Re-Identification",
ECCV 2022, Sec. 3.2; official code CASIA-IVA-Lab/PASS-reID ``main_pass.py``).

Views: G global crops (teacher and student) and local crops, local j drawn from band r_j.
With centred, sharpened teacher distributions P_t and student log-probabilities log P_s:

* [CLS] terms: for each global i and every other view v (globals and all locals):
  H(P_t^cls(g_i), P_s^cls(v)).
* part r terms: for each global i and every other view v among the G globals (student part
  token r) and the locals drawn from band r (student part token r):
  H(P_t^{part r}(g_i), P_s^{part r}(v)).

The official code averages all terms together: L = (sum of CLS terms + sum of part terms) / count.
Part r has its own centre c_r, updated like DINO's from the teacher's part-r outputs on the globals.
"""

from __future__ import annotations

from typing import NamedTuple, cast

from torch import Tensor, nn

from reid.losses.dino import TeacherCentre, cross_view_entropy


class PASSLossOutput(NamedTuple):
    loss: Tensor  # mean over all (CLS and part) terms: the optimised scalar
    loss_cls: Tensor  # mean over the CLS terms (logged)
    loss_part: Tensor  # mean over the part terms (logged)


class PASSLoss(nn.Module):
    """PASS loss (module docstring).

    Shapes (K = head output dim, B = batch, G = globals, n = locals, L = parts):
        student_cls: [G + n, B, K]  (globals first)
        student_parts_global: [G, L, B, K]   student part tokens on the global views
        student_parts_local: [n, B, K]       student part token r_j on local j
        teacher_cls: [G, B, K];  teacher_parts: [G, L, B, K]
        regions: long [n], r_j in 0..L-1
    """

    def __init__(
        self, out_dim: int, num_parts: int, student_temp: float = 0.1, center_momentum: float = 0.9
    ) -> None:
        super().__init__()
        if num_parts < 1:
            raise ValueError(f"PASSLoss needs num_parts >= 1, got {num_parts}")
        self.num_parts = num_parts
        self.student_temp = student_temp
        self.centre_cls = TeacherCentre(out_dim, center_momentum)
        self.centre_parts = nn.ModuleList(TeacherCentre(out_dim, center_momentum) for _ in range(num_parts))

    @property
    def cls_centre(self) -> TeacherCentre:
        """The centre of the [CLS] stream."""
        return self.centre_cls

    def forward(
        self,
        student_cls: Tensor,
        student_parts_global: Tensor,
        student_parts_local: Tensor,
        teacher_cls: Tensor,
        teacher_parts: Tensor,
        regions: Tensor,
        teacher_temp: float,
    ) -> PASSLossOutput:
        self._check(student_parts_global, student_parts_local, teacher_parts, regions)
        probs_cls = [self.centre_cls.probabilities(t, teacher_temp) for t in teacher_cls]
        cls_sum, cls_pairs = cross_view_entropy(list(student_cls), probs_cls, self.student_temp)

        part_sum = student_cls.new_zeros(())
        part_pairs = 0
        for r, centre in enumerate(self.centre_list):
            probs = [centre.probabilities(t, teacher_temp) for t in teacher_parts[:, r]]
            views = list(student_parts_global[:, r]) + list(student_parts_local[regions == r])
            total, pairs = cross_view_entropy(views, probs, self.student_temp)
            part_sum = part_sum + total
            part_pairs += pairs

        self.centre_cls.update(teacher_cls.flatten(0, 1))
        for r, centre in enumerate(self.centre_list):
            centre.update(teacher_parts[:, r].flatten(0, 1))
        loss = (cls_sum + part_sum) / (cls_pairs + part_pairs)
        return PASSLossOutput(loss, cls_sum / cls_pairs, part_sum / max(part_pairs, 1))

    @property
    def centre_list(self) -> list[TeacherCentre]:
        """The part centres, one per region, typed."""
        return [cast(TeacherCentre, centre) for centre in self.centre_parts]

    def _check(
        self, parts_global: Tensor, parts_local: Tensor, teacher_parts: Tensor, regions: Tensor
    ) -> None:
        if parts_global.shape[1] != self.num_parts or teacher_parts.shape[1] != self.num_parts:
            raise ValueError(
                f"PASSLoss(num_parts={self.num_parts}) got part tensors with "
                f"{parts_global.shape[1]} (student) and {teacher_parts.shape[1]} (teacher) parts"
            )
        if regions.numel() != parts_local.shape[0]:
            raise ValueError(f"regions has {regions.numel()} entries for {parts_local.shape[0]} local crops")
        if regions.numel() and (int(regions.min()) < 0 or int(regions.max()) >= self.num_parts):
            raise ValueError(f"regions must lie in [0, {self.num_parts}), got {regions.tolist()}")
