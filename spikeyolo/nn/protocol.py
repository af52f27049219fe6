"""The detector contract of every model family, and the part of it they share.

Three families implement :class:`DetectorModel`: :class:`~spikeyolo.nn.detector.SpikeYOLO` (I-LIF,
directly trained), :class:`~spikeyolo.nn.tiny_yolo.TinyYOLO` (the leaky-ReLU ANN) and
:class:`~spikeyolo.conversion.spiking_yolo.SpikingYOLO` (the converted SNN). The trainer, the
validator, the CLIs and the exporters read these members directly; none probes with a default.

Members:

    num_classes   int
    in_chs        int, input channels (3 for images; an event representation's channel count)
    names         list[str], class names; set from checkpoints, default ["0", "1", ...]
    strides       list[int], stride of each output level (from the head)
    time_steps    T: int for an SNN; None for an ANN. SpikeYOLO's T can be set (``model.time_steps = 4``,
                  one :class:`~spikeyolo.nn.neurons.SpikeCoding` shared by every layer); SpikingYOLO's is
                  its simulation length
    max_level     D: the largest integer an I-LIF neuron emits (SpikeYOLO; 0 for its ReLU twin, whose
                  activations are real-valued); None where D does not apply: an ANN and the converted SNN,
                  whose signed neurons emit +-1 spikes against a threshold, not integer levels
    num_parameters(trainable_only=False) -> int
    build_loss(**gains) -> loss(raw_maps, batch) -> {terms..., "total"}; each head takes its own gains
                  (``trainer.loss``) and ignores the others
    streaming(enabled=True)  carry the neurons' membrane across forwards (True) or start every forward
                  from zero (False, the default); also a context manager that restores the previous mode
    reset_state() forget the carried membrane (the next forward starts from zero)

Forward contract (docs/design.md): train mode returns the raw head maps, eval mode (decoded [B, 4 + C, A],
raw maps).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

from torch import nn

from spikeyolo.nn.neurons import set_stateful, reset_states

__all__ = ["DetectorModel", "DetectorMixin", "Streaming"]


@runtime_checkable
class DetectorModel(Protocol):
    """What every detector offers (see the module docstring for the meaning of each member)."""

    num_classes: int
    in_chs: int
    names: list[str]
    strides: list[int]
    time_steps: int | None
    max_level: int | None

    def __call__(self, images: Any) -> Any: ...

    def num_parameters(self, trainable_only: bool = False) -> int: ...

    def build_loss(self, **gains: float) -> Callable: ...

    def streaming(self, enabled: bool = True) -> "Streaming": ...

    def reset_state(self) -> None: ...


class Streaming:
    """The switch ``model.streaming(enabled)`` makes at once; as a context manager it restores the previous
    mode on exit. Every switch starts the neurons from zero.

        model.streaming(True)                 # from now on
        with model.streaming():               # for a block of forwards
            for window in windows:
                decoded, _ = model(window)
    """

    def __init__(self, model: "DetectorMixin", enabled: bool) -> None:
        self.model = model
        self.previous = model.is_streaming
        model._switch_streaming(enabled)

    def __enter__(self) -> nn.Module:
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.model._switch_streaming(self.previous)


class DetectorMixin:
    """The members of :class:`DetectorModel` every family implements the same way.

    Mixed into an ``nn.Module`` with ``num_classes`` and a ``head`` that has a ``stride`` buffer [L]. The
    stateful mode is a flag of every :class:`~spikeyolo.nn.neurons.SpikingNeuron` (as ``training`` is of
    every module); a model without such neurons (an ANN) carries nothing, so streaming changes none of its
    outputs.
    """

    _names: list[str] | None = None
    _streaming: bool = False

    @property
    def names(self) -> list[str]:
        """Class names (from the checkpoint); ["0", "1", ...] when none were given."""
        return list(self._names) if self._names else [str(i) for i in range(self.num_classes)]

    @names.setter
    def names(self, value: list[str] | None) -> None:
        self._names = list(value) if value else None

    @property
    def strides(self) -> list[int]:
        return [int(s) for s in self.head.stride.tolist()]

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    @property
    def is_streaming(self) -> bool:
        """True while the neurons carry their membrane across forwards."""
        return self._streaming

    def streaming(self, enabled: bool = True) -> Streaming:
        """Carry the neurons' membrane from one forward to the next (``enabled``) or start every forward from
        zero (the default mode). Returns a :class:`Streaming`, usable as a context manager.

        In the streaming mode each forward continues the recursion of the previous one (Eq. 11 for
        ``charge="ilif"``: H[0] = decay * (H[-1] - S[-1]) + X[0]); a forward with another input shape (another
        batch size or image size) starts from zero. Models are trained with a fresh membrane per sample, so a
        carried membrane shifts the input distribution unless the model was trained so.
        """
        return Streaming(self, enabled)

    def reset_state(self) -> None:
        """Forget the carried membrane: the next forward starts from zero (streaming mode)."""
        reset_states(self)

    def _switch_streaming(self, enabled: bool) -> None:
        set_stateful(self, enabled)
        self._streaming = bool(enabled)
