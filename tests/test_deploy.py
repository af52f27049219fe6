"""Spike-driven path: thermometer code, BN / RepConv folding in isolation, and end-to-end equivalence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import spikeyolo
from spikeyolo.deploy import (SpikeDrivenConv, StemConv, set_binary_check, spike_driven_convs, thermometer_expand,
                              to_spike_driven, verify_equivalence)
from spikeyolo.deploy.fixed_point import check_exact, grid_quantize, to_fixed_point
from spikeyolo.deploy.fold import fold_conv_bn, fuse_repconv, fuse_seprepconv
from spikeyolo.nn.layers import RepConv, SepRepConv
from spikeyolo.nn.neurons import ILIF
from tests.conftest import randomize_bn


# tiny convs: one thread avoids OpenMP spin contention on a shared 2-core box (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def build(scale: str, time_steps: int, max_level: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = spikeyolo.compose([f"model=spikeyolo_{scale}", "model.width_multiple=0.0625",
                             f"neuron.time_steps={time_steps}", f"neuron.max_level={max_level}"])
    return randomize_bn(spikeyolo.build_model(cfg, num_classes=3), seed)


def images(seed: int = 0, size: int = 64) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- thermometer code


def test_thermometer_code_order_and_sum():
    spikes = torch.tensor([0.0, 1.0, 3.0, 4.0, 2.0, 0.0]).view(6, 1, 1, 1)  # T=2, B=3
    binary = thermometer_expand(spikes, time_steps=2, max_level=4)
    assert binary.shape == (2 * 4 * 3, 1, 1, 1)
    # [T*D*B] -> [T, D, B]: sub-step k of step t is 1 iff k < s[t]
    grid = binary.view(2, 4, 3)
    assert grid[0, :, 2].tolist() == [1.0, 1.0, 1.0, 0.0]  # s = 3
    assert grid[1, :, 0].tolist() == [1.0, 1.0, 1.0, 1.0]  # s = 4
    assert grid[1, :, 1].tolist() == [1.0, 1.0, 0.0, 0.0]  # s = 2
    assert torch.equal(grid.sum(1).reshape(6, 1, 1, 1), spikes)


# ---------------------------------------------------------------- folding in isolation


def test_fold_bn_into_conv():
    torch.manual_seed(1)
    conv = nn.Conv2d(5, 7, 3, stride=2, padding=1, bias=True).double()
    bn = randomize_bn(nn.BatchNorm2d(7).double(), seed=1).eval()
    weight, bias = fold_conv_bn(conv, bn)
    x = torch.randn(2, 5, 9, 9, dtype=torch.float64)
    expected = bn(conv(x))
    got = torch.conv2d(x, weight, stride=2, padding=1) + bias.view(1, -1, 1, 1)
    assert torch.allclose(got, expected, atol=1e-12)
    assert not torch.allclose(weight, conv.weight, rtol=0.05) and not torch.allclose(bias, conv.bias, rtol=0.05)


@pytest.mark.parametrize("in_chs,out_chs", [(4, 12), (6, 3)])
def test_repconv_reparameterised_into_one_3x3(in_chs, out_chs):
    torch.manual_seed(2)
    rep = randomize_bn(RepConv(in_chs, out_chs).double(), seed=2).eval()
    extra_bn = randomize_bn(nn.BatchNorm2d(out_chs).double(), seed=3).eval()
    weight, bias = fuse_repconv(rep, extra_bn)
    assert weight.shape == (out_chs, in_chs, 3, 3)
    x = torch.randn(2, in_chs, 7, 5, dtype=torch.float64)  # real values, borders included
    expected = extra_bn(rep(x))
    got = torch.conv2d(x, weight, padding=1) + bias.view(1, -1, 1, 1)
    assert torch.allclose(got, expected, atol=1e-12)
    # the BNAndPad border makes the constant non-trivial: a zero input gives the bias everywhere
    zero_out = extra_bn(rep(torch.zeros(1, in_chs, 4, 4, dtype=torch.float64)))
    assert torch.allclose(zero_out, bias.view(1, -1, 1, 1).expand_as(zero_out), atol=1e-12)


def test_seprepconv_reparameterised_into_dense_3x3():
    torch.manual_seed(3)
    sep = randomize_bn(SepRepConv(8, 4).double(), seed=4).eval()
    bn = randomize_bn(nn.BatchNorm2d(4).double(), seed=5).eval()
    weight, bias = fuse_seprepconv(sep, bn)
    assert weight.shape == (4, 8, 3, 3)  # dense 2C -> C, as the reference sheet counts it
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    assert torch.allclose(torch.conv2d(x, weight, padding=1) + bias.view(1, -1, 1, 1), bn(sep(x)), atol=1e-12)


def test_spike_driven_conv_adds_bias_once_per_step():
    torch.manual_seed(4)
    neuron = ILIF(time_steps=2, max_level=4)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    bias = torch.randn(3, dtype=torch.float64)
    unit = SpikeDrivenConv(neuron, weight, bias, padding=1)
    membrane = torch.randn(2 * 2, 2, 5, 5, dtype=torch.float64) * 3  # [T*B, C, H, W]
    spikes = ILIF(time_steps=2, max_level=4)(membrane)
    expected = torch.conv2d(spikes, weight, padding=1) + bias.view(1, -1, 1, 1)
    assert torch.allclose(unit(membrane), expected, atol=1e-12)


# ---------------------------------------------------------------- end to end

GRID_S = [(t, d) for t in (1, 2, 4) for d in (1, 2, 4, 8)]
OTHER_SCALES = [(s, t, d) for s in ("n", "m", "l") for (t, d) in ((1, 4), (2, 2))]


def _assert_equivalent(model: nn.Module, report) -> None:
    assert report.all_binary, report.non_binary_layers
    assert report.num_convs_checked == len(model.neurons())  # every neuron feeds exactly one conv
    assert report.max_abs_diff <= 1e-4 and report.max_abs_diff_maps <= 1e-4
    assert report.spike_mismatches == 0 and report.num_spikes_compared > 0


@pytest.mark.parametrize("time_steps,max_level", GRID_S)
def test_equivalence_s_grid(time_steps, max_level):
    model = build("s", time_steps, max_level)
    report = verify_equivalence(model, images())
    _assert_equivalent(model, report)
    assert report.num_convs_checked == 88  # the 88 neuron rows of the reference energy sheet


@pytest.mark.parametrize("scale,time_steps,max_level", OTHER_SCALES)
def test_equivalence_other_scales(scale, time_steps, max_level):
    model = build(scale, time_steps, max_level)
    _assert_equivalent(model, verify_equivalence(model, images(1)))


def test_equivalence_in_float32():
    # Deployment dtype. Partial sums round differently from one conv on the integer input (~1e-7),
    # so a membrane within that of a .5 boundary can flip a level, and a flip propagates (docs:
    # spike-driven.md). On this small model there is none; a flip is reported, not hidden.
    model = build("s", 2, 4, seed=5)
    report = verify_equivalence(model, images(5), dtype=torch.float32)
    assert report.all_binary and report.dtype == "float32"
    if report.spike_mismatches:
        pytest.xfail(f"float32 rounding flip: {report.spike_mismatches} spikes differ (float64 is exact)")
    _assert_equivalent(model, report)


def test_converted_structure_and_original_untouched():
    model = build("s", 1, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    converted = to_spike_driven(model)
    assert not converted.training
    assert isinstance(converted.layers[1], StemConv)  # real-valued pixels: MAC conv, not expanded
    convs = [m for m in converted.modules() if type(m) is nn.Conv2d]
    sd_convs = [m.conv for m in converted.modules() if isinstance(m, SpikeDrivenConv)]
    assert all(c.bias is None for c in sd_convs)  # additive terms live outside the binary conv
    # every plain conv is inside a spike-driven unit, except the fixed DFL integral
    assert len(convs) == len(sd_convs) + 1 and converted.head.dfl.conv in convs
    assert not any(isinstance(m, nn.BatchNorm2d) for m in converted.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- fixed-point form (exact float32)


def eight_bit(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 255) / 255  # what the loaders produce from 8-bit images


def test_grid_quantize_bounds_every_partial_sum():
    gen = torch.Generator().manual_seed(3)
    weight, bias = torch.randn(6, 5, 3, 3, generator=gen), torch.randn(6, generator=gen)
    wq, bq, step = grid_quantize(weight, bias, input_max=4.0, mantissa_bits=12)
    per_channel = step.view(-1, 1, 1, 1)
    assert torch.equal(wq / per_channel, torch.round(wq / per_channel))  # on the grid
    assert torch.equal(bq / step, torch.round(bq / step))
    assert torch.equal(step.log2(), step.log2().round())  # powers of two
    bound = (4.0 * wq.abs().flatten(1).sum(1) + bq.abs()) / step
    assert bool((bound < 2 ** 12).all()) and bool((bound >= 2 ** 10).all())  # tight, not wasteful
    assert (wq - weight.double()).abs().max() <= step.max() / 2  # rounding, not truncation
    again, _, _ = grid_quantize(wq, bq, 4.0, 12)
    assert torch.equal(again, wq)  # idempotent
    # a coarse grid needs several widenings; what comes back is still on the returned grid and bounded
    wq, bq, step = grid_quantize(weight, bias, input_max=4.0, mantissa_bits=2)
    assert torch.equal(wq / step.view(-1, 1, 1, 1), torch.round(wq / step.view(-1, 1, 1, 1)))
    assert bool(((4.0 * wq.abs().flatten(1).sum(1) + bq.abs()) / step < 4).all())


@pytest.mark.parametrize("scale,time_steps,max_level", [("s", t, d) for t, d in GRID_S] + OTHER_SCALES)
def test_fixed_point_paths_are_identical_in_float32(scale, time_steps, max_level):
    model = build(scale, time_steps, max_level).eval()
    x = eight_bit(torch.cat([images(1), images(2)]))
    integer, spiking = to_fixed_point(model, expand=False), to_fixed_point(model)
    set_binary_check(spiking, True)
    with torch.no_grad():
        (dec_i, maps_i), (dec_s, maps_s) = integer(x), spiking(x)
    # no tolerance: binary partial sums and the integer conv give the same float32 numbers
    assert torch.equal(dec_i, dec_s) and all(torch.equal(a, b) for a, b in zip(maps_i, maps_s))
    assert all(conv.last_check.ok for _, conv in spike_driven_convs(spiking))
    report = check_exact(spiking, x)  # float32 == float64, spike for spike
    assert report.exact and report.spike_mismatches == 0 and report.num_spikes_compared > 0
    assert [name.split(".", 2)[-1] for name in report.unconverted_convs] == ["dfl.conv"]  # decode only
    assert dec_s.abs().max() > 0 and not torch.equal(maps_s[0][0], maps_s[0][1])  # a real, input-dependent run


def test_fixed_point_stays_close_to_the_float_model():
    model = build("s", 1, 4, seed=2).eval()
    fixed = to_fixed_point(model)
    assert fixed.fixed_point == {"mantissa_bits": 20, "levels": 255, "expand": True}
    assert to_fixed_point(build("s", 4, 2)).fixed_point["mantissa_bits"] == 14  # 2 bits per extra step
    reference = to_spike_driven(model)
    for (_, a), (_, b) in zip(spike_driven_convs(fixed), spike_driven_convs(reference)):
        scale = b.conv.weight.abs().max()
        assert (a.conv.weight - b.conv.weight).abs().max() <= scale * 2 ** -9  # a rounding, not a new model
    with pytest.raises(ValueError, match="mantissa_bits"):
        to_fixed_point(model, mantissa_bits=25)
