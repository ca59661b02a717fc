"""Corrections to transformers' eager attention of families whose eager path computes something other than their
production (SDPA) path, applied once at load (`models.load`) so that every attention map, statistic and hidden state
posemb reports is the SDPA path's. A family names its correction in the registry (`Family.eager_fix`).

Only families that bypass transformers' AttentionInterface need one; those that go through it get posemb's own
attention function (as Falcon does from transformers 5.25, whose eager path no longer adds the bias twice: there
`falcon_alibi_once` finds no `alibi` argument and changes nothing).
"""

from __future__ import annotations

from typing import Any


def falcon_alibi_once(model: Any) -> None:
    """Falcon with ALiBi (transformers 5.0-5.24, `FalconModel.forward` and `FalconAttention.forward`): the model folds
    the bias m·j/√head_dim into the attention mask, which both paths add; the eager path also adds `alibi` (m·j) to the
    scores before scaling them by 1/√head_dim, so eager logits carry 2m/√head_dim against SDPA's m/√head_dim (and the
    original Falcon-RW code's). Giving each layer's attention a zero `alibi` leaves the mask's bias alone: eager then
    equals SDPA."""
    import torch

    if not getattr(model.config, "alibi", False):
        return

    def once(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        alibi = kwargs.get("alibi")
        if alibi is not None:
            kwargs["alibi"] = torch.zeros_like(alibi)
        return args, kwargs

    for layer in model.h:
        layer.self_attention.register_forward_pre_hook(once, with_kwargs=True)


FIXES = {"falcon_alibi_once": falcon_alibi_once}


def apply(model: Any, family: Any) -> None:
    """The registry's correction for this family, if it names one."""
    if family.eager_fix:
        FIXES[family.eager_fix](model)
