"""Streaming: the neurons' stateful mode carries the membrane across calls, for both charges, every backend,
T = 1 and T = 2, and ``model.streaming()`` runs a detector in it (spikeyolo-predict carry_state=true); a streamed
window's detections are the one post-process's (``evaluation.predictions.postprocess``) of the window's input."""

from __future__ import annotations

import pytest
import torch

from spikeyolo.nn.neurons import ILIF, set_stateful
from tests.conftest import tiny_model

CHARGES = {"ilif": 0.25, "lif": 0.5}  # the reference's decay of each charge (COCO I-LIF, Gen1 LIF tau 2)


def recursion_across_calls(calls: list[torch.Tensor], max_level: int, decay: float, charge: str) -> torch.Tensor:
    """The neuron equations run over the calls' steps one after the other, the membrane never reset.

    ilif: H[t] = decay * (H[t-1] - S[t-1]) + X[t] (H[-1] - S[-1] = 0); lif: H[t] = V + (X[t] - V) / tau,
    V = H - S (V = 0 at first), tau = 1 / (1 - decay); S = round_half_even(clip(H, 0, D)). calls: [T, N] each.
    """
    tau = 1.0 / (1.0 - decay)
    leftover = torch.zeros_like(calls[0][0])  # V = H - S after the last step so far
    outputs = []
    for call in calls:
        for current in call:
            if charge == "ilif":
                potential = decay * leftover + current
            else:
                potential = leftover + (current - leftover) / tau
            spikes = torch.round(torch.clamp(potential, 0.0, float(max_level)))
            leftover = potential - spikes
            outputs.append(spikes)
    return torch.stack(outputs)


class HookCarry:
    """The forward-hook carry spikeyolo-predict used before the stateful mode existed (charge ilif), kept here
    as the numbers the stateful mode must reproduce: ``decay * V`` added to a neuron's first step, V recomputed
    from the neuron's input and output after each call."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.membranes: dict[str, torch.Tensor] = {}
        self.handles = []
        for name, module in model.named_modules():
            if isinstance(module, ILIF):
                self.handles.append(module.register_forward_pre_hook(self._add(name, module)))
                self.handles.append(module.register_forward_hook(self._keep(name, module)))

    def _add(self, name: str, neuron: ILIF):
        def hook(_module, inputs):
            membrane = self.membranes.get(name)
            seq = inputs[0].reshape(neuron.time_steps, -1)
            if membrane is None or membrane.shape != seq.shape[1:]:
                return None
            first = seq[0] + neuron.decay * membrane
            return (torch.cat((first[None], seq[1:])).reshape(inputs[0].shape), *inputs[1:])
        return hook

    def _keep(self, name: str, neuron: ILIF):
        def hook(_module, inputs, output):
            seq_in, seq_out = inputs[0].reshape(neuron.time_steps, -1), output.reshape(neuron.time_steps, -1)
            potential = seq_in[0]
            for step in range(1, neuron.time_steps):
                potential = neuron.decay * (potential - seq_out[step - 1]) + seq_in[step]
            self.membranes[name] = (potential - seq_out[-1]).detach()
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def active_model(*extra: str) -> torch.nn.Module:
    """A tiny SpikeYOLO in eval mode whose neurons fire (a fresh one is nearly silent, so nothing would carry)."""
    model = tiny_model("s", extra=extra).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.fill_(2.0)
            module.bias.data.fill_(0.7)
    return model


def _backends(charge: str) -> list[str]:
    return ["fused", "loop", "spikingjelly"] if charge == "ilif" else ["fused", "loop"]


@pytest.mark.parametrize("charge", list(CHARGES))
@pytest.mark.parametrize("time_steps", [1, 2])
def test_stateful_neuron_continues_the_recursion_across_calls(charge, time_steps):
    decay = CHARGES[charge]
    gen = torch.Generator().manual_seed(time_steps)
    calls = [torch.randn(time_steps * 2, 3, 5, generator=gen) * 3 for _ in range(4)]  # [T*B, C, W], B = 2
    expected = recursion_across_calls([c.reshape(time_steps, -1) for c in calls], 4, decay, charge)
    for backend in _backends(charge):
        neuron = ILIF(time_steps=time_steps, max_level=4, decay=decay, backend=backend, charge=charge)
        set_stateful(neuron, True)
        got = torch.stack([neuron(c).reshape(time_steps, -1) for c in calls]).flatten(0, 1)
        assert torch.equal(got, expected), backend
        # another shape (batch size) starts from zero: equal to a fresh neuron's output
        other = torch.randn(time_steps * 3, 3, 5, generator=gen) * 3
        fresh = ILIF(time_steps=time_steps, max_level=4, decay=decay, backend=backend, charge=charge)
        assert torch.equal(neuron(other), fresh(other)), backend
        # stateless again: every call from zero
        set_stateful(neuron, False)
        assert torch.equal(neuron(calls[1]), fresh(calls[1])) and neuron.membrane is None


def test_membrane_carry_continues_the_ilif_recursion_across_calls():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5) * 2                        # 4 windows of T = 2 steps, [T*B, ...] with B = 1
    whole = ILIF(time_steps=8, max_level=4, decay=0.25)(x)
    for steps in (2, 1):
        model = torch.nn.Sequential(ILIF(time_steps=steps, max_level=4, decay=0.25))
        set_stateful(model, True)
        pieces = torch.cat([model(chunk) for chunk in x.split(steps)])
        torch.testing.assert_close(pieces, whole if steps == 2 else ILIF(time_steps=8, max_level=4)(x))
        set_stateful(model, False)
        assert not torch.equal(torch.cat([model(chunk) for chunk in x.split(steps)]), whole)   # carry gone


def test_carried_membrane_gets_no_gradient_and_backends_agree():
    gen = torch.Generator().manual_seed(3)
    calls = [torch.randn(4, 6, generator=gen) * 3 for _ in range(2)]
    results = []
    for backend in ("fused", "loop", "spikingjelly"):
        neuron = ILIF(time_steps=2, max_level=4, backend=backend)
        set_stateful(neuron, True)
        neuron(calls[0].clone().requires_grad_(True))
        x = calls[1].clone().requires_grad_(True)
        out = neuron(x)
        out.backward(torch.arange(out.numel(), dtype=out.dtype).view_as(out))
        assert not neuron.membrane.requires_grad
        results.append((out.detach(), x.grad))
    for out, grad in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.allclose(grad, results[0][1])


@pytest.mark.parametrize("time_steps", [1, 2])
def test_streaming_detector_gives_the_hook_carry_numbers(time_steps):
    torch.manual_seed(time_steps)
    model = active_model(f"neuron.time_steps={time_steps}")
    windows = [torch.rand(time_steps, 1, 3, 64, 64) for _ in range(3)]
    with torch.no_grad():
        plain = [model(w)[0] for w in windows]
        carry = HookCarry(model)
        hooked = [model(w)[0] for w in windows]
        carry.remove()
        with model.streaming() as streaming_model:
            assert streaming_model is model and model.is_streaming
            streamed = [model(w)[0] for w in windows]
            model.reset_state()
            assert torch.equal(model(windows[0])[0], plain[0])  # a reset starts from zero
            batch_of_two = torch.rand(time_steps, 2, 3, 64, 64)
            streamed_two = model(batch_of_two)[0]  # another batch size starts from zero
        assert not model.is_streaming
        again = [model(w)[0] for w in windows]
        assert torch.equal(streamed_two, model(batch_of_two)[0])
    for got, expected in zip(streamed, hooked):
        assert torch.equal(got, expected)
    assert torch.equal(streamed[0], plain[0]) and not torch.equal(streamed[1], plain[1])
    assert all(torch.equal(a, b) for a, b in zip(again, plain))  # leaving the context restores the default mode


def test_streaming_reaches_every_neuron_and_lif_charge():
    torch.manual_seed(0)
    model = active_model("neuron.time_steps=2", "neuron.charge=lif", "neuron.decay=0.5")
    windows = [torch.rand(2, 1, 3, 64, 64) for _ in range(2)]
    model.streaming(True)
    assert all(neuron.stateful for _, neuron in model.neurons())
    with torch.no_grad():
        first, second = (model(w)[0] for w in windows)
    assert all(neuron.membrane is not None for _, neuron in model.neurons())
    model.streaming(False)
    with torch.no_grad():
        assert torch.equal(model(windows[0])[0], first) and not torch.equal(model(windows[1])[0], second)


def test_stream_windows_are_the_one_postprocess_of_their_input(tmp_path):
    """stream_recording's detections equal postprocess(forward(the window as the loader encodes it)): the path
    evaluation and the Detector take, boxes in sensor pixels, clipped to the sensor."""
    import numpy as np
    from omegaconf import OmegaConf

    import spikeyolo
    from spikeyolo.data.events import read_dat, write_dat
    from spikeyolo.data.sources.prophesee import clip_input
    from spikeyolo.engine.event_stream import EventSettings, stream_recording
    from spikeyolo.evaluation.predictions import ImageDetections, postprocess
    from spikeyolo.structures import model_input

    rng = np.random.default_rng(0)
    events = np.zeros(20_000, dtype=[("t", "<u4"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
    events["t"] = np.sort(rng.integers(0, 600_000, len(events)))
    events["x"], events["y"] = rng.integers(0, 304, len(events)), rng.integers(0, 240, len(events))
    events["p"] = rng.integers(0, 2, len(events))
    recording = write_dat(tmp_path / "rec_td.dat", events, width=304, height=240)
    torch.manual_seed(0)
    model = active_model("neuron.time_steps=2")
    trained = OmegaConf.to_container(spikeyolo.compose(["data=gen1"]).data, resolve=True)
    settings = EventSettings.of(model, trained, 64)
    rep = settings.representation
    windows = list(stream_recording(model, recording, settings, [250_000, 500_000], torch.device("cpu"), conf=0.001))
    assert [w.t_us for w in windows] == [250_000, 500_000]
    for window in windows:
        clip = rep.encode(read_dat(recording, window.t_us - rep.window_us, window.t_us), window.t_us, 304, 240)
        image, ratio_pad = clip_input(clip, (240, 304), rep, 64, settings.most_recent_first, settings.input_shape,
                                      settings.pad_position, settings.stride)
        with torch.no_grad():
            decoded, _ = model(model_input(torch.from_numpy(image)[None]))      # [T, 1, C, 64, 64] in
        (expected,) = postprocess(decoded, [ratio_pad], [(240, 304)], conf=0.001, class_names=model.names)
        found = window.detections
        assert isinstance(found, ImageDetections) and found.shape == (240, 304) and len(found) > 0
        assert np.array_equal(found.rows(), expected.rows()) and np.array_equal(window.boxes, expected.rows())
        assert np.array_equal(found.unclipped_boxes, expected.unclipped_boxes)
        assert found.boxes.min() >= 0 and (found.boxes[:, [0, 2]] <= 304).all()
        assert (found.boxes[:, [1, 3]] <= 240).all()
