"""Spiking neurons of the converted network (Spiking-YOLO, seeds 000/001).

All three are integrate-and-fire neurons with reset by subtraction (Eq. 1):

    V[t] = V[t-1] + z[t] - theta[t]

and differ only in their thresholds:

    IFNeuron        s = +1 if V >= Vth                                  (Eq. 3; ReLU)
    SignedNeuron    s = +1 if V >= Vth, -1 if V < -Vth                  (symmetric baseline)
    IBTNeuron       s = +1 if V >= Vth, -1 if V < -Vth / alpha          (Eq. 7; leaky-ReLU)

A positive spike subtracts Vth from V, a negative one adds back the size of the
negative threshold (Vth for the signed neuron, Vth / alpha for IBT). Spikes are
emitted as values in {-1, 0, +1}; a spike stands for the value Vth, so the layer
after a neuron multiplies its weights by that neuron's ``v_threshold`` (the
converter does this; with the default Vth = 1 it is a no-op).

Why -Vth / alpha (and not -alpha * Vth) in Eq. 7: for a constant input current x
per step, a positive x makes the neuron fire +1 every Vth / x steps, so the mean
output is x / Vth. A negative x needs |x|-steps to drive V down by Vth / alpha,
so -1 spikes come every Vth / (alpha |x|) steps and the mean output is
alpha * x / Vth: leaky-ReLU with slope alpha (in units of Vth). With -alpha * Vth
the rate would be x / alpha, ten times too large for alpha = 0.1: the
over-activation the paper blames on the symmetric neuron, made worse. The paper
states the same numbers: alpha = 0.1 gives Vth,pos = 1 and Vth,neg = -10.

The neurons are multi-step and stateful: ``forward`` takes [T, ...] and returns
[T, ...] spikes; the membrane ``v`` and the signed running ``spike_count`` persist
across calls (so a long simulation can be fed in chunks) until ``reset()``.
Residual membrane plus spike count is what Vmem decoding reads (section 4 of
seed 001: Vmem / Vth = spike count + remainder).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["IFNeuron", "SignedNeuron", "IBTNeuron", "ConversionNeuron"]


class ConversionNeuron(nn.Module):
    """Integrate-and-fire with reset by subtraction and an optional negative threshold.

    Args:
        v_threshold: Vth > 0, the positive threshold (and the value a spike stands for).
        v_threshold_neg: magnitude of the negative threshold (fires -1 when V < -v_threshold_neg),
            or None for no negative spikes.

    State (after a forward): ``v`` membrane [...], ``spike_count`` signed spike sum [...],
    ``num_spikes`` total number of (positive and negative) spikes, ``time_steps`` number of steps
    integrated since the last reset.
    """

    def __init__(self, v_threshold: float = 1.0, v_threshold_neg: float | None = None) -> None:
        super().__init__()
        if not float(v_threshold) > 0:
            raise ValueError(f"v_threshold must be > 0, got {v_threshold}")
        if v_threshold_neg is not None and not float(v_threshold_neg) > 0:
            raise ValueError(f"v_threshold_neg must be > 0 (a magnitude) or None, got {v_threshold_neg}")
        self.v_threshold = float(v_threshold)
        self.v_threshold_neg = None if v_threshold_neg is None else float(v_threshold_neg)
        self.v: torch.Tensor | None = None
        self.spike_count: torch.Tensor | None = None
        self.num_spikes = 0.0  # total |spikes| since the reset (for firing rates and energy)
        self.time_steps = 0

    def reset(self) -> None:
        """Forget the membrane and spike count (called once per simulation by the network)."""
        self.v = None
        self.spike_count = None
        self.num_spikes = 0.0
        self.time_steps = 0

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Integrate input currents.

        Args:
            x_seq: [T, ...] input current per step.

        Returns:
            [T, ...] spikes in {-1, 0, +1} (dtype of the input).
        """
        if self.v is None or self.v.shape != x_seq.shape[1:]:
            self.v = torch.zeros_like(x_seq[0])
            self.spike_count = torch.zeros_like(x_seq[0])
            self.time_steps = 0
        v = self.v
        spikes = torch.empty_like(x_seq)
        for step in range(x_seq.shape[0]):
            v = v + x_seq[step]                                      # Eq. 1, integrate
            pos = (v >= self.v_threshold).to(v.dtype)                # Eq. 3 / Eq. 7, first case
            if self.v_threshold_neg is None:
                spike = pos
                v = v - pos * self.v_threshold                       # reset by subtraction
            else:
                neg = (v < -self.v_threshold_neg).to(v.dtype)        # Eq. 7, second case
                spike = pos - neg
                v = v - pos * self.v_threshold + neg * self.v_threshold_neg
            spikes[step] = spike
        self.v = v
        self.spike_count = self.spike_count + spikes.sum(0)
        self.num_spikes += float(spikes.abs().sum())
        self.time_steps += x_seq.shape[0]
        return spikes

    def rate(self) -> torch.Tensor:
        """Mean output value per step so far: spike_count * Vth / T."""
        return self.spike_count * self.v_threshold / max(self.time_steps, 1)

    def vmem_rate(self) -> torch.Tensor:
        """Accumulated input per step, read from the membrane: (spike_count * Vth + V) / T.

        For the IF and the symmetric signed neuron this equals the mean input current exactly (the Vmem
        decoding of seed 001); for IBT the two spike signs weigh differently, so it is refused.
        """
        residual = self.v if self.v is not None else torch.zeros(())
        if self.v_threshold_neg is not None and self.v_threshold_neg != self.v_threshold:
            raise RuntimeError("Vmem decoding needs equal positive and negative thresholds")
        return (self.spike_count * self.v_threshold + residual) / max(self.time_steps, 1)

    def extra_repr(self) -> str:
        return f"v_threshold={self.v_threshold}, v_threshold_neg={self.v_threshold_neg}"


class IFNeuron(ConversionNeuron):
    """Plain IF neuron (Eq. 1, 3): only positive spikes; its rate approximates ReLU.

    Args:
        v_threshold: Vth.
    """

    def __init__(self, v_threshold: float = 1.0) -> None:
        super().__init__(v_threshold, None)


class SignedNeuron(ConversionNeuron):
    """Signed neuron with a symmetric threshold -Vth (Rueckauer et al. 2017): the paper's baseline.

    Its rate approximates the identity clipped to [-1, 1] * Vth, so on a leaky-ReLU net the negative
    side is 1 / alpha times too large (over-activation).

    Args:
        v_threshold: Vth.
    """

    def __init__(self, v_threshold: float = 1.0) -> None:
        super().__init__(v_threshold, v_threshold)


class IBTNeuron(ConversionNeuron):
    """Signed neuron with imbalanced threshold (Eq. 7): +1 at V >= Vth, -1 at V < -Vth / alpha.

    Its rate approximates leaky-ReLU with slope alpha. ``alpha = 0`` (a ReLU layer) has no
    negative spikes.

    Args:
        v_threshold: Vth.
        alpha: the leaky-ReLU slope being reproduced (Tiny YOLO: 0.1), 0 <= alpha <= 1.
    """

    def __init__(self, v_threshold: float = 1.0, alpha: float = 0.1) -> None:
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0 or math.isnan(alpha):
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        super().__init__(v_threshold, float(v_threshold) / alpha if alpha > 0 else None)
        self.alpha = alpha

    def extra_repr(self) -> str:
        return f"v_threshold={self.v_threshold}, alpha={self.alpha} (v_threshold_neg={self.v_threshold_neg})"
