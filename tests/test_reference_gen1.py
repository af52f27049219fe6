"""Reference Gen1 weights (SpikeYOLO_for_Gen1) load into ``experiment=gen1`` and give the reference's outputs.

The reference Gen1 neuron is spikingjelly 0.0.0.0.12's ``MultiStepLIFNode`` (tau 2, decay_input, soft
reset) as the Gen1 code modifies it (shared/reference/spikeyolo-architecture.md section 1, "Gen1 code"):

    H_t = V_{t-1} + (x_t - V_{t-1}) / 2,   S_t = round(clamp(H_t, 0, 4)),   V_t = H_t - S_t,   V_{-1} = 0

``neuron.charge=lif`` (spikeyolo/nn/neurons.py) computes exactly this; experiment=gen1 sets it. The test
below swaps every neuron of the loaded model for :class:`SpikingjellyGen1LIF`, a direct transcription of
spikingjelly's per-step ``neuronal_charge`` / fire / ``neuronal_reset`` written here, and asserts equal
outputs. Verified once against the real reference Gen1 code as well (tests/fixtures/reference/PROVENANCE.md):
outputs ``torch.equal``; the house I-LIF with decay 0.5 (no halved input) differs by up to 194.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import reference_fakes as fakes
import spikeyolo
from conftest import TINY, randomize_bn
from spikeyolo.engine.checkpoint import model_from_payload, read_model_checkpoint
from spikeyolo.errors import ReferenceCheckpointError
from spikeyolo.nn.neurons import ILIF

pytestmark = pytest.mark.usefixtures("one_thread")


class SpikingjellyGen1LIF(nn.Module):
    """spikingjelly 0.0.0.0.12 MultiStepLIFNode(tau=2., decay_input=True, v_reset=None, detach_reset=True) as
    modified by SpikeYOLO_for_Gen1 (surrogate = quant4, soft reset by the spike), backend 'torch'."""

    def __init__(self, time_steps: int) -> None:
        super().__init__()
        self.time_steps, self.tau = time_steps, 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.reshape(self.time_steps, -1)  # [T*B, C, H, W] -> [T, B*C*H*W]
        v, spikes = 0.0, []
        for t in range(self.time_steps):
            v = v + (steps[t] - v) / self.tau              # neuronal_charge (decay_input, v_reset None)
            spike = torch.round(torch.clamp(v, min=0, max=4))  # neuronal_fire: quant4
            v = v - spike                                  # neuronal_reset: soft, by the spike
            spikes.append(spike)
        return torch.stack(spikes).reshape(x.shape)


def with_neurons(model: nn.Module, make) -> nn.Module:
    other = copy.deepcopy(model)
    for name, module in list(other.named_modules()):
        if isinstance(module, ILIF):
            parent, _, attr = name.rpartition(".")
            setattr(other.get_submodule(parent) if parent else other, attr, make(module))
    return other


@pytest.fixture(scope="module")
def gen1():
    cfg = spikeyolo.compose(["experiment=gen1", *TINY])
    model = randomize_bn(spikeyolo.build_model(cfg, num_classes=2))
    return cfg, fakes.lively(fakes.reference_state_dict(model))


def test_gen1_reference_checkpoint_loads_into_experiment_gen1_exactly(tmp_path, gen1):
    cfg, weights = gen1
    path = fakes.make_reference_checkpoint(tmp_path / "gen1.pt", weights, "train", "gen1")
    payload = read_model_checkpoint(path)  # recognised by its MultiStepLIFNode modules
    neuron = payload["model_config"]["neuron"]
    assert {k: neuron[k] for k in ("time_steps", "max_level", "decay", "charge")} == \
        {"time_steps": 2, "max_level": 4, "decay": 0.5, "charge": "lif"}
    assert payload["source"] == "reference (gen1, ema weights)"
    inferred = model_from_payload(payload)
    configured = spikeyolo.load_reference_weights(spikeyolo.build_model(cfg, num_classes=2), path).eval()
    reference = with_neurons(configured, lambda n: SpikingjellyGen1LIF(n.time_steps)).eval()
    house = with_neurons(configured, lambda n: ILIF(n.time_steps, n.max_level, decay=0.5)).eval()
    clip = torch.rand(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2  # [T, B, C, H, W]
    with torch.no_grad():
        expected, maps = reference(clip)
        for model in (inferred, configured):
            boxes, model_maps = model(clip)
            assert torch.equal(boxes, expected)
            assert all(torch.equal(a, b) for a, b in zip(model_maps, maps, strict=True))
        assert not torch.equal(house(clip)[0], expected)  # the halved input matters: the test can tell
    assert expected[:, 4:].std() > 0.05


def test_other_gen1_neurons_are_refused_with_the_difference(tmp_path, gen1):
    _, weights = gen1
    model = fakes.build_detection_model(weights, "gen1")
    for module in model.modules():
        if type(module).__name__ == "MultiStepLIFNode":
            module.tau = 3.0
    path = fakes.save_reference(fakes.training_form(model, kind="gen1"), tmp_path / "tau3.pt")
    with pytest.raises(ReferenceCheckpointError, match=r"\(3\.0, True, None, True\)\]; spikeyolo reproduces only "
                                                       r"the reference's \(2\.0, True, None, True\) \(charge=lif\)"):
        read_model_checkpoint(path)


def test_lif_charge_matches_the_measured_reference_sequence_and_its_gradient():
    # shared/reference section 1, measured with the bundled spikingjelly: x held 2 steps
    x = torch.tensor([0.3, 1.2, 5.0, -1.0, 2.6]).repeat(2, 1)
    for backend in ("fused", "loop"):
        assert ILIF(2, 4, 0.5, backend=backend, charge="lif")(x).tolist() == [[0, 1, 2, 0, 1], [0, 0, 3, 0, 1]]
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 40, generator=gen) * 4).requires_grad_(True)
    x_loop = x.detach().clone().requires_grad_(True)
    weights = torch.randn(3, 40, generator=gen)
    (ILIF(3, 4, 0.5, charge="lif")(x) * weights).sum().backward()
    (ILIF(3, 4, 0.5, backend="loop", charge="lif")(x_loop) * weights).sum().backward()
    assert torch.allclose(x.grad, x_loop.grad, atol=1e-6)  # fused BPTT = autograd through the loop
    with pytest.raises(ValueError, match="charge='lif' runs on backend 'fused' or 'loop'"):
        ILIF(2, 4, 0.5, backend="spikingjelly", charge="lif")
    with pytest.raises(ValueError, match="charge must be"):
        ILIF(2, 4, 0.5, charge="izhikevich")
