"""Small PyTorch helpers shared by the algorithms."""

from __future__ import annotations

from typing import Any

import torch as th

FUSED_OPTIMIZERS: tuple[type[th.optim.Optimizer], ...] = (th.optim.Adam, th.optim.AdamW)


def with_fused_optimizer(optimizer_class: type[th.optim.Optimizer], kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """``kwargs`` with ``fused=True`` added for Adam/AdamW unless the caller chose ``fused`` or ``foreach``.

    The fused kernel updates every parameter in one call instead of a dozen small ops per tensor: on CPU it takes
    Adam's step from about 0.85 to 0.35 ms for a 256x256 actor, which matters when CVPO runs 29 M-step iterations
    per update. Results agree with the unfused step up to float rounding.
    """
    kwargs = dict(kwargs or {})
    if issubclass(optimizer_class, FUSED_OPTIMIZERS) and "fused" not in kwargs and "foreach" not in kwargs:
        kwargs["fused"] = True
    return kwargs
