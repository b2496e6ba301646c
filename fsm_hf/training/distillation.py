"""Attention transfer for warm starts: teach freshly built LaCET layers to read like attention.

When a LaCET model starts from an attention model (``cross_view_mixer: attention``, see
``configs/demo_warmup.yaml``), its fast weights are new: for the first hundreds of steps the
layers after each mixer see outputs they were not trained on, and the model first loses much of
what the attention model knew. :class:`MixerDistillation` adds a per-layer target to the loss:
every LaCET layer's output should match what the attention model's cross-view read (the teacher,
frozen) gives on the same input. As in LoLCATs' attention transfer, the target is a function of
the student's own layer input, so the loss says directly how each layer should read.

The loss of one forward pass is the mean over layers of the relative squared error
``||out - target||^2 / ||target||^2`` (scale-free, 1.0 for an output of zeros).

Before training, :meth:`MixerDistillation.match_output_scales` rescales each fresh LaCET layer's
output so that it is as loud as the attention it replaces: fresh fast weights give outputs of RMS
about 1 (their output RMSNorm starts at weight 1), where a trained attention read may give 0.3, and
AdamW moves the norm's weight by about the learning rate per step, so left alone the layers after
each mixer receive a louder signal than they were trained on for hundreds of steps.

Measured on the built-in model's recipe (``benchmarks/README.md``), neither helped: matching the
scales (factors 0.5-0.8 there) left training as it was, and the LaCET layers' error against the
attention stayed near 0.3 while the loss was on, which held the rest of the model back.
"""

from __future__ import annotations

from typing import Callable, List

import torch
from torch import nn

__all__ = ["MixerDistillation"]


def _mixers(model: nn.Module) -> List[nn.Module]:
    return [block.lacet for block in model.fsm.backbone.layers]


class MixerDistillation:
    """Forward hooks that score every cross-view mixer of ``student`` against ``teacher``'s.

    Args:
        student: the ``FSMForNovelViewSynthesis`` being trained (its mixers are LaCET layers).
        teacher: an ``FSMForNovelViewSynthesis`` with ``cross_view_mixer="attention"`` and the same
            number of layers and width; it is frozen and only its mixers are used.

    Usage: after each forward pass of ``student`` (with gradients on), :meth:`pop_loss` returns
    the distillation loss of that pass (a scalar with gradients into the student) and forgets it.
    :meth:`remove` takes the hooks off.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module):
        s, t = student.config, teacher.config
        if t.cross_view_mixer != "attention":
            raise ValueError(
                f"The distillation teacher must be an attention model (cross_view_mixer='attention'); "
                f"it has cross_view_mixer={t.cross_view_mixer!r}."
            )
        if (t.num_hidden_layers, t.hidden_size) != (s.num_hidden_layers, s.hidden_size):
            raise ValueError(
                f"The distillation teacher has {t.num_hidden_layers} layers of width {t.hidden_size}; the model being "
                f"trained has {s.num_hidden_layers} of width {s.hidden_size}. They must match layer for layer."
            )
        teacher.requires_grad_(False).eval()
        self._losses: List[torch.Tensor] = []
        self._pairs = list(zip(_mixers(student), _mixers(teacher)))
        self._handles = [student_mixer.register_forward_hook(self._hook(teacher_mixer)) for student_mixer, teacher_mixer in self._pairs]

    def _hook(self, teacher_mixer: nn.Module):
        def score(module, args, output):
            if not torch.is_grad_enabled():  # inference (or a checkpoint's no-grad pass): nothing to learn
                return
            x, schedule = args[0], args[1]
            with torch.no_grad():
                target, _, _ = teacher_mixer(x, schedule)  # [B, L_apply, D]
            out = output[0].float()
            target = target.float()
            self._losses.append((out - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-12))

        return score

    @torch.no_grad()
    def match_output_scales(
        self, run_model: Callable[[], object], reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
    ) -> List[float]:
        """Scale each student mixer's output norm so its output RMS equals the teacher's, layer by layer.

        Args:
            run_model: runs one forward pass of the student (e.g. on the first training batch).
            reduce: averages a tensor over processes (``accelerator.reduce(t, "mean")``) so every
                replica applies the same factors.

        Returns:
            The factor applied to each layer (``teacher RMS / student RMS``). One forward pass per
            layer: layer ``l`` is measured after layers ``< l`` were rescaled.
        """
        factors = []
        for student_mixer, teacher_mixer in self._pairs:
            if not isinstance(getattr(student_mixer, "o_norm", None), nn.RMSNorm):
                raise ValueError(f"match_output_scales needs LaCET layers (an output RMSNorm); got {type(student_mixer).__name__}.")
            measured = []

            def measure(module, args, output, teacher_mixer=teacher_mixer):
                target, _, _ = teacher_mixer(args[0], args[1])
                measured.append(torch.stack([target.float().pow(2).mean(), output[0].float().pow(2).mean()]))

            handle = student_mixer.register_forward_hook(measure)
            try:
                run_model()
            finally:
                handle.remove()
            teacher_ms, student_ms = reduce(measured[0]).tolist()
            factor = (teacher_ms / max(student_ms, 1e-24)) ** 0.5
            student_mixer.o_norm.weight.mul_(factor)
            factors.append(factor)
        return factors

    def pop_loss(self) -> torch.Tensor:
        """The mean relative error over the layers scored since the last call; raises if none was."""
        if not self._losses:
            raise RuntimeError("MixerDistillation.pop_loss: no mixer ran with gradients since the last call.")
        loss = torch.stack(self._losses).mean()
        self._losses = []
        return loss

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._losses = []
