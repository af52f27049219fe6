"""I-LIF neuron (SpikeYOLO Eq. 11) against a direct implementation of the equations."""

from __future__ import annotations

import pytest
import torch

from spikeyolo.deploy.export import OnnxILIF, onnx_ready
from spikeyolo.deploy.int_sim import compile_block
from spikeyolo.deploy.nir.spikeyolo_stages import Unsupported, neuron_coefficients
from spikeyolo.deploy.spike_driven import SpikeDrivenConv
from spikeyolo.nn.neurons import (ChargeRule, ILIF, ReLUNeuron, SpikingNeuron, quantize_ste, reset_states, run_steps,
                                  set_stateful)


def ilif_oracle(x: torch.Tensor, max_level: int, decay: float) -> torch.Tensor:
    """H[t] = decay*(H[t-1] - S[t-1]) + X[t]; S = round_half_even(clip(H, 0, D)); STE on [0, D]; S detached in reset."""
    outputs, membrane, spike = [], None, None
    for t in range(x.shape[0]):
        membrane = x[t] if t == 0 else decay * (membrane - spike.detach()) + x[t]
        clipped = membrane.clamp(0, max_level)
        window = ((membrane >= 0) & (membrane <= max_level)).to(x.dtype)
        # forward value: rounded clip; backward: gradient 1 inside [0, D], 0 outside
        spike = (membrane * window).detach() * 0 + torch.round(clipped).detach() + (membrane - membrane.detach()) * window
        outputs.append(spike)
    return torch.stack(outputs)


@pytest.mark.parametrize("backend", ["fused", "spikingjelly", "loop"])
@pytest.mark.parametrize("time_steps", [1, 2, 4])
@pytest.mark.parametrize("max_level", [1, 2, 4, 8])
def test_ilif_matches_equations_and_gradients(time_steps, max_level, backend):
    gen = torch.Generator().manual_seed(time_steps * 10 + max_level)
    x = (torch.randn(time_steps, 3, 5, 6, 7, generator=gen) * max_level).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    neuron = ILIF(time_steps=time_steps, max_level=max_level, decay=0.25, backend=backend)
    out = neuron(x.flatten(0, 1)).view_as(x)  # flat [T*B, C, H, W] layout
    reset_states(neuron)
    ref = ilif_oracle(x_ref, max_level, 0.25)
    assert torch.equal(out, ref)
    values = torch.unique(out)
    assert set(values.tolist()) <= set(float(v) for v in range(max_level + 1))
    weights = torch.randn(x.shape, generator=gen)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", ["fused", "spikingjelly"])
def test_reference_measured_sequence(backend):
    # shared/reference section 1: x held for 2 steps -> [0,1,4,0,2,0] then [0,1,4,0,3,1]
    x = torch.tensor([0.3, 1.2, 5.0, -1.0, 2.5, 0.5]).repeat(2, 1)
    neuron = ILIF(time_steps=2, max_level=4, backend=backend)
    assert neuron(x).tolist() == [[0, 1, 4, 0, 2, 0], [0, 1, 4, 0, 3, 1]]


@pytest.mark.parametrize("backend", ["fused", "spikingjelly", "loop"])
def test_window_edges_over_time(backend):
    x = torch.tensor([[0.0, 4.0, -1e-4, 4.001]] * 2, requires_grad=True)
    ILIF(time_steps=2, max_level=4, backend=backend)(x).sum().backward()
    # step 1 gradient 1 inside [0, D]; step 0 adds decay * (step-1 gradient) through the membrane
    assert x.grad.tolist() == [[1.25, 1.25, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]


def test_round_half_to_even_and_window_edges():
    x = torch.tensor([0.5, 1.5, 2.5, 3.5, -0.0, 4.0, -1e-4, 4.0001], requires_grad=True)
    y = quantize_ste(x, 4)
    assert y.tolist() == [0.0, 2.0, 2.0, 4.0, 0.0, 4.0, 0.0, 4.0]
    y.sum().backward()
    assert x.grad.tolist() == [1, 1, 1, 1, 1, 1, 0, 0]  # both ends of [0, D] included


def test_state_reset_gives_identical_outputs():
    neuron = ILIF(time_steps=4, max_level=4, backend="spikingjelly")
    set_stateful(neuron, True)  # every call starts from zero unless the membrane is carried (tests/test_streaming.py)
    x = torch.randn(4 * 2, 3, 4, 4) * 3
    first = neuron(x)
    reset_states(neuron)
    assert torch.equal(first, neuron(x))
    # without a reset the membrane carries over, so a second call differs
    assert not torch.equal(first, neuron(x))


def test_invalid_settings_raise():
    with pytest.raises(ValueError, match="time_steps"):
        ILIF(time_steps=0)
    with pytest.raises(ValueError, match="max_level"):
        ILIF(max_level=0)


def test_relu_twin():
    x = torch.tensor([-1.0, 0.5, 7.0])
    assert ReLUNeuron()(x).tolist() == [0.0, 0.5, 7.0]


def test_deploy_interface_of_the_two_neurons():
    assert ILIF(2, 4, 0.25).charge_rule == ChargeRule("ilif", 0.25, 0.25, None)
    lif = ILIF(2, 4, 0.5, charge="lif").charge_rule
    assert lif == ChargeRule("lif", 0.5, 0.5, 2.0) and (lif.gain, lif.leak) == (0.5, 0.5)
    assert ILIF(2, 4, 0.25).charge_rule.gain == 1.0 and not ILIF().exports_as_is
    relu = ReLUNeuron(2)
    assert relu.charge_rule is None and relu.exports_as_is and relu.max_level == 0
    noisy = ILIF(2, 4, 0.25 + 1e-12)
    noisy.snap_for_fixed_point()
    assert noisy.decay == 0.25  # a power of two up to float noise becomes exact
    other = ILIF(2, 4, 0.3)
    other.snap_for_fixed_point()
    assert other.decay == 0.3
    relu.snap_for_fixed_point()  # nothing to snap


class _HalfLeak(SpikingNeuron):
    """A neuron no deploy path knows by class: Eq. 11 with decay 1/2 on run_steps, not an ILIF."""

    exports_as_is = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [T*B, C, H, W] -> [T, B*C*H*W] -> back
        return run_steps(x.reshape(self.time_steps, -1), quantize_ste, self.max_level, 0.5)[0].reshape(x.shape)

    @property
    def charge_rule(self) -> ChargeRule:
        return ChargeRule("ilif", 0.5, 0.5)


def test_a_new_neuron_runs_through_the_deploy_paths_by_its_interface():
    neuron = _HalfLeak(3, 4)
    x = torch.tensor([[0.6, 2.5, -1.0], [1.2, 0.4, 3.0], [0.7, 1.6, 0.2]]).reshape(3, 1, 3, 1)  # [T*B, C, H, W]
    ready = onnx_ready(torch.nn.Sequential(neuron))
    assert isinstance(ready[0], OnnxILIF) and ready[0].decay == 0.5
    assert torch.equal(ready(x), neuron(x)) and neuron(x).flatten().tolist() == [1, 2, 0, 1, 1, 2, 1, 1, 0]
    assert neuron_coefficients(neuron) == (1.0, 0.5)
    conv = SpikeDrivenConv(neuron, torch.ones(2, 3, 1, 1), torch.zeros(2))
    assert [(c.decay_num, c.decay_shift, c.max_level) for c in compile_block(conv).convs()] == [(1, 1, 4)]
    # the ANN twin has no membrane: the paths that rebuild one refuse it, as before
    assert onnx_ready(torch.nn.Sequential(ReLUNeuron(3)))[0].__class__ is ReLUNeuron
    with pytest.raises(Unsupported, match="ReLUNeuron neuron has no NIR mapping"):
        neuron_coefficients(ReLUNeuron(3))
    with pytest.raises(ValueError, match="models the I-LIF neuron, got ReLUNeuron"):
        compile_block(SpikeDrivenConv(ReLUNeuron(3), torch.ones(2, 3, 1, 1), torch.zeros(2)))
