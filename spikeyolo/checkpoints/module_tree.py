"""Weights and class names out of a pickled module tree of inert stand-ins (reference and ultralytics files).

Both foreign formats pickle an ultralytics ``DetectionModel``; the bounded reader of :mod:`spikeyolo.torchfile`
turns every module in it into a :class:`~spikeyolo.torchfile.StandIn` that keeps the pickled attribute dict and
nothing that runs. The state_dict is assembled here the way ``nn.Module.state_dict`` orders it (parameters,
persistent buffers, then children, depth first) by reading those dicts; no method of the pickled objects exists to
be called.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from spikeyolo.torchfile import Refusal, StandIn

__all__ = ["MAX_MODULE_VISITS", "plain_tensor", "collect_state_dict", "class_names"]

MAX_MODULE_VISITS = 200_000  # a real s model has ~900 modules; shared children must not multiply without bound


def plain_tensor(value: Any, key: str) -> torch.Tensor:
    """A pickled tensor as a detached one (floating ones as float32). Raises Refusal for anything else."""
    if type(value) is not torch.Tensor or value._backward_hooks:
        raise Refusal(f"refusing {key}: not a plain tensor")
    value = value.detach()
    return value.float() if value.is_floating_point() else value.clone()


def _collect(module: Any, prefix: str, out: dict[str, torch.Tensor], visit: Callable[[StandIn], None] | None,
             ancestors: list[int], visits: list[int]) -> None:
    """nn.Module.state_dict's order over the pickled attribute dicts, without calling anything.

    A module may be shared (spikingjelly's default ``surrogate.Sigmoid()`` is one object in every Gen1 neuron)
    and is then visited under each name, as state_dict does; a module inside itself is refused.
    """
    where = prefix.rstrip(".") or "model"
    if not isinstance(module, StandIn):
        raise Refusal(f"refusing module entry {where}: not a module")
    if id(module) in ancestors:
        raise Refusal(f"refusing module {where}, which contains itself")
    visits[0] += 1
    if visits[0] > MAX_MODULE_VISITS:
        raise Refusal(f"refusing a module tree of more than {MAX_MODULE_VISITS} modules")
    if visit is not None:
        visit(module)
    state = module.state
    parameters, buffers = state.get("_parameters") or {}, state.get("_buffers") or {}
    children, skipped = state.get("_modules") or {}, state.get("_non_persistent_buffers_set") or set()
    if not all(isinstance(d, dict) for d in (parameters, buffers, children)) or not isinstance(skipped, set):
        raise Refusal(f"refusing module {where} with malformed parameter or module dicts")
    for table in (parameters, {k: v for k, v in buffers.items() if k not in skipped}):
        for name, value in table.items():
            if type(name) is not str:
                raise Refusal(f"refusing a non-string tensor name in {where}")
            if value is not None:
                out[prefix + name] = plain_tensor(value, prefix + name)
    for name, child in children.items():
        if type(name) is not str:
            raise Refusal(f"refusing a non-string module name in {where}")
        if child is not None:
            _collect(child, f"{prefix}{name}.", out, visit, [*ancestors, id(module)], visits)


def collect_state_dict(module: StandIn, visit: Callable[[StandIn], None] | None = None) -> dict[str, torch.Tensor]:
    """The state_dict of a pickled module tree of stand-ins (floating tensors as float32), as
    ``nn.Module.state_dict`` orders it; ``visit`` is called with every module reached (in that order).

    Raises:
        Refusal: a malformed tree (an entry that is no module, a module inside itself, too many modules,
            malformed dicts, non-string names, tensors that are not plain).
    """
    out: dict[str, torch.Tensor] = {}
    _collect(module, "", out, visit, [], [0])
    return out


def class_names(raw: Any) -> list[str]:
    """A pickled ``names`` ({index: name} or a list) in index order; empty if it is neither."""
    if isinstance(raw, dict) and all(type(k) is int for k in raw):
        raw = [raw[k] for k in sorted(raw)]
    if isinstance(raw, (list, tuple)) and all(type(n) is str for n in raw):
        return list(raw)
    return []
