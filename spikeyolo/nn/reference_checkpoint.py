"""What spikeyolo reads out of a reference (BICLab/SpikeYOLO) checkpoint: weights, class names, neuron type.

The object comes from :func:`spikeyolo.nn.reference_pickle.unpickle_checkpoint` (restricted: inert
stand-ins for every pickled class). The state_dict is assembled the way ``nn.Module.state_dict`` orders
it (parameters, persistent buffers, then children, depth first) by reading the pickled attribute dicts;
no method of the pickled objects exists to be called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spikeyolo.nn.reference_pickle import ReferenceCheckpointError, Refusal, read_error, unpickle_checkpoint
from spikeyolo.torchfile import StandIn

__all__ = ["ReferenceCheckpoint", "load_reference_checkpoint", "collect_state_dict", "class_names"]


@dataclass
class ReferenceCheckpoint:
    """What a reference checkpoint holds that spikeyolo uses.

    Attributes:
        path: the file.
        entry: ``ema`` or ``model`` (the module the weights come from; ultralytics prefers the EMA).
        state_dict: reference keys (``model.<i>[.<j>].<...>``) -> tensors, floating ones as float32.
        names: class names (the pickled ``names`` dict, in index order); empty if absent.
        neurons: reference class name -> count of neuron modules (``mem_update``, ``MultiStepLIFNode``).
        lif_settings: the distinct (tau, decay_input, v_reset, detach_reset) of the Gen1 LIF neurons.
        train_args: the primitive entries of ``train_args`` (imgsz, ...).
    """

    path: Path
    entry: str
    state_dict: dict[str, torch.Tensor]
    names: list[str] = field(default_factory=list)
    neurons: dict[str, int] = field(default_factory=dict)
    lif_settings: set[tuple] = field(default_factory=set)
    train_args: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``gen1`` (spikingjelly LIF neurons, SpikeYOLO_for_Gen1) or ``coco`` (mem_update I-LIF)."""
        return "gen1" if "MultiStepLIFNode" in self.neurons else "coco"


_NEURON_CLASSES = {"mem_update", "MultiStepLIFNode"}


def _plain_tensor(value: Any, key: str) -> torch.Tensor:
    if type(value) is not torch.Tensor or value._backward_hooks:
        raise Refusal(f"refusing {key}: not a plain tensor")
    value = value.detach()
    return value.float() if value.is_floating_point() else value.clone()


_MAX_MODULE_VISITS = 200_000  # a real s model has ~900 modules; shared children must not multiply without bound


def _collect(module: Any, prefix: str, out: ReferenceCheckpoint, ancestors: list[int], visits: list[int]) -> None:
    """nn.Module.state_dict's order over the pickled attribute dicts, without calling anything.

    A module may be shared (spikingjelly's default ``surrogate.Sigmoid()`` is one object in every Gen1
    neuron) and is then visited under each name, as state_dict does; a module inside itself is refused.
    """
    where = prefix.rstrip(".") or "model"
    if not isinstance(module, StandIn):
        raise Refusal(f"refusing module entry {where}: not a module")
    if id(module) in ancestors:
        raise Refusal(f"refusing module {where}, which contains itself")
    visits[0] += 1
    if visits[0] > _MAX_MODULE_VISITS:
        raise Refusal(f"refusing a module tree of more than {_MAX_MODULE_VISITS} modules")
    short = module.pickled_name.rsplit(".", 1)[-1]
    if short in _NEURON_CLASSES:
        out.neurons[short] = out.neurons.get(short, 0) + 1
        if short == "MultiStepLIFNode":  # spikingjelly keeps v_reset among its registered memories
            memories = module.state.get("_memories")
            v_reset = memories.get("v_reset", "missing") if isinstance(memories, dict) else "missing"
            out.lif_settings.add((module.state.get("tau"), module.state.get("decay_input"), v_reset,
                                  module.state.get("detach_reset")))
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
                out.state_dict[prefix + name] = _plain_tensor(value, prefix + name)
    for name, child in children.items():
        if type(name) is not str:
            raise Refusal(f"refusing a non-string module name in {where}")
        if child is not None:
            _collect(child, f"{prefix}{name}.", out, [*ancestors, id(module)], visits)


def collect_state_dict(module: StandIn) -> dict[str, torch.Tensor]:
    """The state_dict of a pickled module tree of stand-ins (floating tensors as float32), as
    ``nn.Module.state_dict`` orders it. Raises Refusal for a malformed tree."""
    holder = ReferenceCheckpoint(Path(), "model", {})
    _collect(module, "", holder, [], [0])
    return holder.state_dict


def class_names(raw: Any) -> list[str]:
    """A pickled ``names`` ({index: name} or a list) in index order; empty if it is neither."""
    return _names(raw)


def _names(raw: Any) -> list[str]:
    if isinstance(raw, dict) and all(type(k) is int for k in raw):
        raw = [raw[k] for k in sorted(raw)]
    if isinstance(raw, (list, tuple)) and all(type(n) is str for n in raw):
        return list(raw)
    return []


def load_reference_checkpoint(path: str | Path) -> ReferenceCheckpoint:
    """Read a reference checkpoint (training or published form) or a reference-key state_dict file.

    Raises:
        ReferenceCheckpointError: one line naming the refused global or structure (nothing has run).
    """
    path = Path(path)
    if not path.is_file():
        raise ReferenceCheckpointError(f"reference checkpoint not found: {path}")
    obj = unpickle_checkpoint(path)
    try:
        if isinstance(obj, dict) and obj and all(type(v) is torch.Tensor for v in obj.values()):
            state = {str(k): _plain_tensor(v, str(k)) for k, v in obj.items()}
            return ReferenceCheckpoint(path, "state_dict", state)
        if not isinstance(obj, dict):
            raise Refusal(f"refusing a top-level {type(obj).__name__} (a reference checkpoint is a dict)")
        entry = "ema" if obj.get("ema") is not None else "model"
        module = obj.get(entry)
        if module is None:
            raise Refusal("refusing a dict without a 'model' or 'ema' entry")
        if not isinstance(module, StandIn) or module.pickled_name != "ultralytics.nn.tasks.DetectionModel":
            raise Refusal(f"refusing a {entry} entry that is not a DetectionModel")
        result = ReferenceCheckpoint(path, entry, {})
        _collect(module, "", result, [], [0])
        result.names = _names(module.state.get("names"))
        args = obj.get("train_args")
        if isinstance(args, dict):
            result.train_args = {k: v for k, v in args.items()
                                 if type(k) is str and (v is None or type(v) in (str, int, float, bool))}
        return result
    except Refusal as refusal:
        raise ReferenceCheckpointError(f"{refusal} in a reference checkpoint: {path}") from None
    except (TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise read_error(path, exc) from None
