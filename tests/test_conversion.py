"""Spiking-YOLO conversion: neurons (Eq. 7), normalisation (Eq. 4-5), converter, Tiny YOLO and its anchor head."""

from __future__ import annotations

import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikeyolo
from spikeyolo.config import model_config
from spikeyolo.conversion import (IBTNeuron, IFNeuron, PercentileTracker, SignedNeuron, SpikingMaxPool,
                                  SpikingYOLO, activation_scales, ann_units, convert, convert_detector,
                                  normalize_units, spiking_model_config)
from spikeyolo.engine.checkpoint import save_checkpoint

TINY_YOLO = ["model=tiny_yolo", "model.width_multiple=0.0625"]


def tiny_yolo(num_classes: int = 3):
    return spikeyolo.build_model(spikeyolo.compose(TINY_YOLO), num_classes=num_classes)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().mean() / ref.abs().mean())


# ---------------------------------------------------------------- neurons


def test_ibt_thresholds_follow_eq7():
    neuron = IBTNeuron(v_threshold=1.0, alpha=0.1)
    assert neuron.v_threshold == 1.0 and neuron.v_threshold_neg == pytest.approx(10.0)  # Vth,neg = -Vth / alpha
    # constant input -3: V = -3, -6, -9, -12 -> fires -1 at step 4 (V < -10), reset by subtraction V = -2
    spikes = neuron(torch.full((8, 1), -3.0)).view(-1).tolist()
    assert spikes == [0, 0, 0, -1, 0, 0, -1, 0]  # V: -3 -6 -9 -2 -5 -8 -1 -4
    assert float(neuron.v) == pytest.approx(-4.0)
    # positive side: input 0.4 -> +1 at V >= 1 and subtract 1
    neuron.reset()
    assert neuron(torch.full((5, 1), 0.4)).view(-1).tolist() == [0, 0, 1, 0, 1]


def test_ibt_mean_output_is_leaky_relu_and_signed_is_not():
    inputs = torch.linspace(-1, 1, 41)
    steps = 2000
    currents = inputs.expand(steps, -1).clone()  # [T, 41] constant input per step
    expected = F.leaky_relu(inputs, 0.1)
    ibt, signed, plain = IBTNeuron(1.0, 0.1), SignedNeuron(1.0), IFNeuron(1.0)
    for neuron in (ibt, signed, plain):
        neuron(currents)
    assert (ibt.rate() - expected).abs().max() < 2e-3
    negative = inputs < -0.2
    # the symmetric neuron passes negative inputs ~unscaled: 1/alpha = 10 times too large
    assert (signed.rate()[negative] - inputs[negative]).abs().max() < 2e-3
    assert (signed.rate()[negative] - expected[negative]).abs().min() > 0.15
    assert (plain.rate() - F.relu(inputs)).abs().max() < 2e-3
    # Vmem decoding of the symmetric neuron recovers the mean input exactly
    assert torch.allclose(signed.vmem_rate(), inputs, atol=1e-5)


def test_neurons_keep_state_across_chunks():
    currents = torch.randn(64, 3, 5)
    whole, chunked = IBTNeuron(), IBTNeuron()
    out_whole = whole(currents)
    out_chunked = torch.cat([chunked(part) for part in currents.split(10)])
    assert torch.equal(out_whole, out_chunked) and torch.equal(whole.v, chunked.v)


# ---------------------------------------------------------------- normalisation


def _hand_net() -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.LeakyReLU(0.1), nn.Conv2d(2, 1, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([2.0, -4.0]).view(2, 1, 1, 1))
        net[0].bias.copy_(torch.tensor([0.0, 1.0]))
        net[2].weight.copy_(torch.tensor([1.0, 10.0]).view(1, 2, 1, 1))
        net[2].bias.copy_(torch.tensor([0.5]))
    return net


def test_normalisation_factors_match_hand_calculation():
    images = torch.tensor([0.5, 1.0]).view(1, 1, 1, 2)
    # conv1 pre-activation: ch0 {1, 2}, ch1 {-1, -3} -> leaky: ch0 {1, 2}, ch1 {-0.1, -0.3}
    # conv2: {1 - 1 + 0.5, 2 - 3 + 0.5} = {0.5, -0.5}
    units = ann_units(_hand_net())
    channel = activation_scales(units, [images], "channel", percentile=100)
    assert torch.allclose(channel[0], torch.tensor([2.0, 0.3])) and torch.allclose(channel[1], torch.tensor([0.5]))
    layer = activation_scales(units, [images], "layer")  # default: maximum
    assert torch.allclose(layer[0], torch.tensor([2.0, 2.0])) and torch.allclose(layer[1], torch.tensor([0.5]))

    normalize_units(units, channel)  # Eq. 5
    assert torch.allclose(units[0].conv.weight.view(-1), torch.tensor([2 / 2, -4 / 0.3]))
    assert torch.allclose(units[0].conv.bias, torch.tensor([0.0, 1 / 0.3]))
    assert torch.allclose(units[1].conv.weight.view(-1), torch.tensor([1 * 2 / 0.5, 10 * 0.3 / 0.5]))
    assert torch.allclose(units[1].conv.bias, torch.tensor([1.0]))
    # normalised activations peak at 1 in every channel
    assert torch.allclose(units[0](images).abs().amax((0, 2, 3)), torch.ones(2))

    units = ann_units(_hand_net())
    normalize_units(units, layer)  # Eq. 4
    assert torch.allclose(units[0].conv.weight.view(-1), torch.tensor([1.0, -2.0]))
    assert torch.allclose(units[1].conv.weight.view(-1), torch.tensor([4.0, 40.0]))


def test_percentile_tracker_matches_numpy():
    torch.manual_seed(0)
    values = torch.randn(4, 3, 20, 20) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1)
    tracker = PercentileTracker(99.9, per_channel=True)
    tracker.update(values)
    expected = np.percentile(values.abs().transpose(0, 1).reshape(3, -1).numpy(), 99.9, axis=1)
    assert np.allclose(tracker.compute().numpy(), expected, rtol=1e-5)
    layer = PercentileTracker(99.0, per_channel=False)
    for part in values.split(1):
        layer.update(part)
    assert float(layer.compute()) == pytest.approx(float(np.percentile(values.abs().numpy(), 99.0)), rel=0.02)


# ---------------------------------------------------------------- converter


def _leaky_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.LeakyReLU(0.1),
                        nn.MaxPool2d(2, 2),
                        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.LeakyReLU(0.1),
                        nn.ReplicationPad2d((0, 1, 0, 1)), nn.MaxPool2d(2, 1),
                        nn.Conv2d(16, 6, 1))
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return net.eval()


def test_bn_folding_keeps_the_ann_function():
    net = _leaky_net()
    images = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        assert torch.allclose(ann_units(net)(images), net(images), atol=1e-5)


def test_snn_output_converges_to_ann_output():
    net = _leaky_net()
    images = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        reference = net(images)
    snn = convert(net, [images], norm="channel", neuron=partial(IBTNeuron, 1.0, 0.1), time_chunk=128)
    errors = [relative_error(snn(images, time_steps=steps), reference) for steps in (16, 64, 256, 1024)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.03, errors
    # spike-count decoding converges too, and the time chunking does not change the result
    assert relative_error(snn(images, time_steps=1024, decoding="spike"), reference) < 0.04
    snn.time_chunk = 7
    assert relative_error(snn(images, time_steps=256), reference) == pytest.approx(errors[-2], rel=1e-4)
    # the paper's ablation: layer-norm is slower, the symmetric signed neuron does not converge
    layer_norm = convert(net, [images], norm="layer", neuron=partial(IBTNeuron, 1.0, 0.1), time_chunk=128)
    assert relative_error(layer_norm(images, time_steps=1024), reference) > errors[-1]
    signed = convert(net, [images], norm="channel", neuron=SignedNeuron, time_chunk=128)
    assert relative_error(signed(images, time_steps=1024), reference) > 0.08


def test_spiking_maxpool_passes_the_most_active_input():
    pool = SpikingMaxPool(nn.MaxPool2d(2, 2))
    steps = 8
    spikes = torch.zeros(steps, 1, 1, 2, 2)
    spikes[:, 0, 0, 0, 0] = 1.0                 # fires every step
    spikes[::2, 0, 0, 1, 1] = 1.0               # every second step
    spikes[1::2, 0, 0, 0, 1] = 1.0              # every second step, other phase
    out = pool(spikes)
    assert out.shape == (steps, 1, 1, 1, 1)
    assert float(out.sum()) == steps            # rate 1 = max of the input rates (1, 0.5, 0.5, 0)


def test_converter_rejects_unknown_layers():
    with pytest.raises(TypeError, match="Sigmoid"):
        ann_units(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sigmoid(), nn.Conv2d(4, 2, 1)))


# ---------------------------------------------------------------- Tiny YOLO and the anchor head


def test_tiny_yolo_forward_contract():
    model = tiny_yolo(num_classes=3)
    assert model.strides == [32] and model.head.num_classes == 3 and float(model.head.stride[0]) == 32
    images = torch.rand(2, 3, 64, 96)
    model.train()
    maps = model(images)
    assert isinstance(maps, list) and [tuple(m.shape) for m in maps] == [(2, 5 * (5 + 3), 2, 3)]
    model.eval()
    with torch.no_grad():
        decoded, raw = model(images)
    assert decoded.shape == (2, 4 + 3, 5 * 2 * 3) and raw[0].shape == maps[0].shape
    assert decoded[:, 4:].min() >= 0 and decoded[:, 4:].max() <= 1
    assert decoded[:, 2:4].min() > 0  # widths and heights in pixels


def test_tiny_yolo_full_size_matches_darknet_parameter_count():
    model = spikeyolo.build_model(spikeyolo.compose(["model=tiny_yolo"]), num_classes=20)
    # yolov2-tiny-voc.cfg: 15,727,536 3x3 weights + 6,112 BN gamma/beta + 128,125 in the 1x1 detection conv
    assert model.num_parameters() == 15_861_773


def _fixed_batch(images: torch.Tensor) -> dict:
    return {"batch_idx": torch.tensor([0.0, 0.0, 1.0]), "cls": torch.tensor([[0.0], [2.0], [1.0]]),
            "bboxes": torch.tensor([[0.3, 0.3, 0.3, 0.4], [0.7, 0.6, 0.5, 0.3], [0.5, 0.5, 0.8, 0.8]]),
            "img": images}


def test_anchor_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    model = tiny_yolo(num_classes=3).train()
    images = torch.rand(2, 3, 64, 64)
    batch = _fixed_batch(images)
    loss_fn = model.build_loss(box=7.5, cls=0.5, dfl=1.5, tal_topk=10)  # v8 gains are ignored
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    totals = []
    for _ in range(8):
        losses = loss_fn(model(images), batch)
        assert set(losses) == {"box", "obj", "cls", "total"} and losses["total"].dim() == 0
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        totals.append(float(losses["total"].detach()))
    assert totals[-1] < 0.5 * totals[0], totals


# ---------------------------------------------------------------- Spiking-YOLO detector and checkpoints


def _calibrated_tiny_yolo():
    torch.manual_seed(0)
    model = tiny_yolo(num_classes=3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_spiking_yolo_contract_and_checkpoint_round_trip(tmp_path):
    ann = _calibrated_tiny_yolo()
    images = torch.rand(2, 3, 64, 64)
    snn = convert_detector(ann, [images], time_steps=64).eval()
    assert isinstance(snn, SpikingYOLO) and snn.strides == [32] and snn.num_classes == 3
    with torch.no_grad():
        ref_decoded, ref_maps = ann(images)
        decoded, maps = snn(images)
    assert decoded.shape == ref_decoded.shape and maps[0].shape == ref_maps[0].shape
    cfg = spikeyolo.compose(TINY_YOLO)
    neuron_node = {"kind": "ibt", "alpha": 0.1}
    config = spiking_model_config(model_config(cfg, 3), neuron_node, 64, "vmem", 16, "channel", None)
    path = save_checkpoint({"model_config": config, "model": snn.state_dict(), "ema": None}, tmp_path / "snn.pt")
    loaded = spikeyolo.load_checkpoint(path)
    assert isinstance(loaded, SpikingYOLO) and loaded.time_steps == 64
    with torch.no_grad():
        assert torch.equal(loaded(images)[0], decoded)


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spikeyolo.cli.convert", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_reports_bad_input_with_exit_code_2(tmp_path):
    missing = _run_cli(f"checkpoint={tmp_path / 'none.pt'}")
    assert missing.returncode == 2 and "checkpoint not found" in missing.stderr
    cfg = spikeyolo.compose(TINY_YOLO)
    ann = spikeyolo.build_model(cfg, num_classes=1)
    path = save_checkpoint({"model_config": model_config(cfg, 1), "model": ann.state_dict(), "ema": None},
                           tmp_path / "ann.pt")
    unknown = _run_cli(f"checkpoint={path}", "spiking_neuron=foo")
    assert unknown.returncode == 2 and "expected one of ibt, signed, if" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1


def test_simulate_reads_out_every_mark_as_separate_runs_would():
    net = _leaky_net()
    images = torch.rand(2, 3, 12, 12)
    snn = convert(net, [images], norm="channel", neuron=partial(IBTNeuron, 1.0, 0.1), time_chunk=5)
    states = snn.simulate(images, [12, 3, 40])
    assert sorted(states) == [3, 12, 40]
    for steps in (3, 12, 40):
        for decoding in ("vmem", "spike"):
            assert torch.equal(states[steps][decoding], snn(images, time_steps=steps, decoding=decoding))
    # spikes entering the later convs accumulate with T
    counts = [sum(states[t]["input_spikes"]) for t in (3, 12, 40)]
    assert 0 < counts[0] < counts[1] < counts[2]
    with pytest.raises(ValueError, match=">= 1"):
        snn.simulate(images, [0, 4])


def test_eval_sweeps_timesteps_of_a_converted_checkpoint(tmp_path):
    import json

    from spikeyolo.cli.convert import convert as convert_command
    from spikeyolo.cli.eval import evaluate

    cfg = spikeyolo.compose(TINY_YOLO)
    torch.manual_seed(0)
    ann = spikeyolo.build_model(cfg, num_classes=1)
    ann_path = save_checkpoint({"model_config": model_config(cfg, 1), "model": ann.state_dict(), "ema": None,
                                "names": ["tree"]}, tmp_path / "ann.pt")
    snn_path = convert_command(spikeyolo.compose([f"checkpoint={ann_path}", "calibration.images=4",
                                                  "data.imgsz=64", "timesteps=8"], config_name="convert"))
    report = evaluate(spikeyolo.compose([f"checkpoint={snn_path}", "timesteps=[2,8]", "data.imgsz=64",
                                         f"run_dir={tmp_path / 'eval'}"], config_name="eval"))
    saved = json.loads((tmp_path / "eval" / "timesteps.json").read_text())
    assert sorted((p["decoding"], p["time_steps"]) for p in saved["points"]) == [
        ("spike", 2), ("spike", 8), ("vmem", 2), ("vmem", 8)]
    assert all(0.0 <= p["map50"] <= 1.0 for p in saved["points"]) and saved["images"] == 12
    sops = {p["time_steps"]: p["sops"] for p in saved["points"]}
    assert 0 < sops[2] < sops[8] and saved["dense_macs"] > saved["first_layer_macs"] > 0
    assert report["ann_energy_mj"] == pytest.approx(saved["dense_macs"] * 4.6e-9)
    assert [len(rates) for rates in saved["channel_rates"]] == [
        m.out_channels for m in ann.modules() if isinstance(m, nn.Conv2d)][:-1]
    for name in ("map_vs_timesteps.png", "firing_rates.png", "channel_rates.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 1000
    assert len(saved["firing_rates"]) == len([m for m in ann.modules() if isinstance(m, nn.Conv2d)]) - 1


def test_train_command_trains_the_ann(tmp_path):
    import json

    from spikeyolo.cli.train import train
    from tests.test_engine import TINY_RUN

    run_dir = tmp_path / "tiny"
    metrics = train(spikeyolo.compose([*TINY_YOLO, *TINY_RUN, "trainer.epochs=1", f"run_dir={run_dir}"]))
    assert 0.0 <= metrics["map50"] <= 1.0
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["time_steps"] is None and saved["parameters"] > 0  # an ANN: no T, no D
    assert (run_dir / "weights" / "best.pt").is_file() and (run_dir / "model_card.md").is_file()
