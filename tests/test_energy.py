"""Energy counting: dense ops pinned at 640 and reconciled with the reference sheet, exact vs reference
SOPs, per-layer definitions, energies, report files and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import spikeyolo
from spikeyolo.deploy import SpikeDrivenConv, to_spike_driven
from spikeyolo.energy import build_report, count_dense_ops, measure, presets, write_report
from spikeyolo.nn.neurons import ILIF, SpikingNeuron
from tests.test_deploy import build, images


# tiny convs: one thread avoids OpenMP spin contention on a shared 2-core box (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


# power_cal.xlsx rows 4-92 (shared/reference/spikeyolo_power_cal_rows.tsv, column MACs): s model, 640, nc 80
SHEET_MACS = [
    240_844_800, 209_715_200, 160_563_200, 1_887_436_800, 3_774_873_600, 3_774_873_600, 471_859_200, 209_715_200,
    80_281_600, 1_887_436_800, 3_774_873_600, 3_774_873_600, 209_715_200, 80_281_600, 1_887_436_800, 3_774_873_600,
    3_774_873_600, 471_859_200, 209_715_200, 40_140_800, 1_887_436_800, 2_831_155_200, 2_831_155_200, 209_715_200,
    40_140_800, 1_887_436_800, 2_831_155_200, 2_831_155_200, 209_715_200, 40_140_800, 1_887_436_800, 2_831_155_200,
    2_831_155_200, 471_859_200, 209_715_200, 20_070_400, 1_887_436_800, 1_887_436_800, 1_887_436_800, 52_428_800,
    209_715_200, 52_428_800, 209_715_200, 40_140_800, 471_859_200, 2_831_155_200, 2_831_155_200, 104_857_600,
    209_715_200, 80_281_600, 1_887_436_800, 3_774_873_600, 3_774_873_600, 209_715_200, 209_715_200, 80_281_600,
    1_887_436_800, 3_774_873_600, 3_774_873_600, 235_929_600, 209_715_200, 40_140_800, 1_887_436_800, 1_887_436_800,
    1_887_436_800, 235_929_600, 209_715_200, 20_070_400, 1_887_436_800, 943_718_400, 943_718_400, 471_859_200,
    235_929_600, 26_214_400, 943_718_400, 943_718_400, 65_536_000, 235_929_600, 58_982_400, 6_553_600, 471_859_200,
    235_929_600, 16_384_000, 117_964_800, 14_745_600, 1_638_400, 235_929_600, 58_982_400, 4_096_000]
# the sheet's three shape errors (reference section 7): xlsx row -> (our name, yaml-correct MACs)
SHEET_FIXES = {48: ("layers.12.token_mixer.project", 1_887_436_800),  # sheet uses 20x20, yaml 40x40
               67: ("layers.22.channel_mixer.mixer1", 2_831_155_200),  # sheet hidden 512, yaml 768 (ratio 3)
               68: ("layers.22.channel_mixer.mixer2", 2_831_155_200)}
# dense ops per image at 640x640, T=1, nc=80 (MACs of one step; the stem included)
DENSE_OPS_640 = {"n": (89, 59_291_443_200), "s": (89, 104_514_355_200), "m": (109, 217_295_360_000),
                 "l": (109, 312_101_068_800)}


def _counts_640(scale: str):
    model = spikeyolo.build_model(spikeyolo.compose([f"model=spikeyolo_{scale}", "neuron.max_level=4"]),
                                  num_classes=80)
    return count_dense_ops(to_spike_driven(model.to("meta")), 640)  # shapes only: no arithmetic


@pytest.mark.parametrize("scale", list(DENSE_OPS_640))
def test_dense_ops_at_640_pinned(scale):
    counts = _counts_640(scale)
    rows, total = DENSE_OPS_640[scale]
    assert len(counts) == rows and counts[0].kind == "stem"
    assert sum(c.dense_ops for c in counts) == total


def test_s_dense_ops_reconcile_with_reference_sheet_row_by_row():
    counts = _counts_640("s")
    assert sum(SHEET_MACS) == 101_211_340_800  # the sheet's total
    differing = {}
    for xlsx_row, (count, sheet) in enumerate(zip(counts, SHEET_MACS), start=4):
        if count.dense_ops != sheet:
            differing[xlsx_row] = (count.name, count.dense_ops)
    assert differing == SHEET_FIXES
    correction = sum(ops - SHEET_MACS[row - 4] for row, (_, ops) in SHEET_FIXES.items())
    assert correction == 3_303_014_400
    assert sum(c.dense_ops for c in counts) == 101_211_340_800 + 3_303_014_400 == 104_514_355_200


# ---------------------------------------------------------------- exact counting on a hand example


@pytest.mark.parametrize("position,stride,expected_taps", [((0, 0), 1, 4), ((2, 2), 1, 9), ((0, 1), 1, 6),
                                                           ((1, 1), 2, 4), ((2, 2), 2, 1)])
def test_exact_sops_use_true_fan_out(position, stride, expected_taps):
    out_chs, max_level = 5, 4
    unit = SpikeDrivenConv(ILIF(1, max_level), torch.ones(out_chs, 2, 3, 3), torch.zeros(out_chs), stride,
                           padding=1)
    model = nn.Sequential(unit)
    membrane = torch.full((1, 2, 5, 5), -1.0)
    membrane[0, 1, position[0], position[1]] = 3.0  # one element fires 3 -> three 1s on virtual steps
    with torch.no_grad():
        (count,) = measure(model, [membrane])
    assert count.ones_sum == 3 and count.mean_spikes == pytest.approx(3 / 50)
    assert count.sops_exact == 3 * out_chs * expected_taps
    assert count.firing_rate == pytest.approx(3 / 50 / max_level)
    assert count.dense_ops == out_chs * 2 * 9 * (5 // stride + (5 % stride > 0)) ** 2


# ---------------------------------------------------------------- counting on a model


@pytest.fixture(scope="module")
def measured():
    model = build("s", 2, 4)
    spike_model = to_spike_driven(model)
    batch = [images(0, 128), images(1, 128)]
    return model, spike_model, batch, measure(spike_model, batch)


def test_mean_spikes_is_the_integer_neuron_output_mean(measured):
    model, _, batch, counts = measured
    means: list[float] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: means.append(float(out.double().mean())))
               for m in model.modules() if isinstance(m, SpikingNeuron)]
    with torch.no_grad():
        for image in batch:
            model.eval()(image)
    for handle in handles:
        handle.remove()
    spiking = [c for c in counts if c.kind == "spike"]
    per_neuron = [sum(means[i::len(spiking)]) / len(batch) for i in range(len(spiking))]
    assert len(means) == 2 * len(spiking)
    for count, expected in zip(spiking, per_neuron):
        assert count.mean_spikes == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert count.firing_rate == pytest.approx(expected / 4)
        assert count.sops_reference == pytest.approx(count.dense_ops * expected * 2)  # x T
    overall = sum(c.ones_sum for c in spiking) / sum(c.elements_sum for c in spiking)
    assert 0.05 < overall < 2.0  # the random-BN model really fires (non-trivial counts)


def test_exact_and_reference_agree_up_to_padding(measured):
    _, _, _, counts = measured
    report = build_report(counts, mode="exact")
    total = report.total
    # the same rule on in-bounds taps agrees with the exact count of 1s x fan-out within 1 %
    assert total["sops_exact"] == pytest.approx(total["sops_reference_valid"], rel=0.01)
    assert abs(total["modes_rel_diff_in_bounds"]) < 0.01
    assert total["modes_rel_diff_sheet"] == pytest.approx(total["sops_reference"] / total["sops_exact"] - 1)
    assert "modes agree, in-bounds taps" in report.to_markdown()
    # the dense rule also charges taps on zero padding: at 128x128 (maps down to 4x4) that is ~12 %
    assert total["sops_reference"] > total["sops_exact"]
    # without padding (1x1, stride 1) the two counts are identical conv by conv
    pointwise = [c for c in counts if c.kind == "spike" and c.kernel_size == 1 and c.stride == 1]
    assert pointwise and all(c.sops_exact == pytest.approx(c.sops_reference, rel=1e-12) for c in pointwise)


def test_energies_follow_eq16_17(measured):
    _, _, _, counts = measured
    for name, preset in presets().items():
        report = build_report(counts, preset, mode="reference")
        t = report.total
        stem = counts[0].dense_ops
        assert report.layers[0].kind == "stem" and t["stem_ops"] == stem
        assert t["ann_energy_mj"] == pytest.approx(t["dense_ops"] * preset.e_mac_pj * 1e-9)
        assert t["snn_energy_mj"] == pytest.approx((stem * preset.e_mac_pj + t["sops"] * preset.e_ac_pj) * 1e-9)
        assert t["eq17_snn_energy_mj"] == pytest.approx(t["snn_energy_mj"], rel=1e-9)
        assert t["sops"] == t["sops_reference"]
    assert presets()["float32_45nm"].e_mac_pj == 4.6 and presets()["int_spiking_yolo"].e_ac_pj == 0.1


def test_report_files(measured, tmp_path):
    _, _, _, counts = measured
    report = build_report(counts, info={"random_images": True})
    paths = write_report(report, counts, tmp_path)
    data = json.loads(paths["json"].read_text())
    for key in ("dense_ops", "sops", "ann_energy_mj", "snn_energy_mj"):
        assert key in data["total"]
    assert len(data["layers"]) == len(counts) == 89
    assert {"name", "dense_ops", "mean_spikes", "firing_rate", "sops", "snn_energy_pj"} <= set(data["layers"][1])
    assert "| 0 | layers.1 | stem |" in paths["markdown"].read_text()
    assert sorted(p.name for p in paths["plots"]) == ["channels.png", "layers.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths["plots"])


# ---------------------------------------------------------------- CLI


def test_cli_random_images(tmp_path):
    from spikeyolo.cli.energy import energy

    cfg = spikeyolo.compose([f"run_dir={tmp_path}", "random_images=true", "data.imgsz=64", "num_images=2",
                             "model.width_multiple=0.0625", "energy=int_spiking_yolo", "plots=false"],
                            config_name="energy")
    total = energy(cfg)
    data = json.loads((tmp_path / "energy.json").read_text())
    assert data["info"]["random_images"] is True and data["num_images"] == 2
    assert data["preset"]["e_ac_pj"] == 0.1 and total["dense_ops"] == data["total"]["dense_ops"] > 0
    assert (tmp_path / "energy.md").is_file()


@pytest.mark.parametrize("rect, shape", [(None, [640, 640]), ("true", [672, 672])])
def test_cli_dataset_images_are_counted_at_the_stated_size(tmp_path, rect, shape):
    """data.imgsz=640 counts 640x640 inputs (the sheet's convention); the validator's rect batches letterbox a
    square 400x400 tile to 672x672 (pad 0.5 stride 32) and are used only when asked (data.val_rect=true)."""
    from spikeyolo.cli.energy import energy

    overrides = [f"run_dir={tmp_path}", "data.imgsz=640", "num_images=1", "model.width_multiple=0.0625",
                 "plots=false"] + ([f"data.val_rect={rect}"] if rect else [])
    cfg = spikeyolo.compose(overrides, config_name="energy")
    total = energy(cfg)
    data = json.loads((tmp_path / "energy.json").read_text())
    assert data["info"]["input_shapes"] == [shape] and data["info"]["imgsz"] == 640
    model = spikeyolo.build_model(cfg)
    assert total["dense_ops"] == sum(c.dense_ops for c in count_dense_ops(to_spike_driven(model.to("meta")),
                                                                          shape[0]))
    assert f"input {shape[0]}x{shape[1]}" in (tmp_path / "energy.md").read_text()


@pytest.mark.parametrize("override", ["checkpoint=/no/such/best.pt", "num_images=0", "mode=dense"])
def test_cli_bad_input_exits_2(tmp_path, capsys, override):
    from spikeyolo.cli.energy import energy

    cfg = spikeyolo.compose([f"run_dir={tmp_path}", "random_images=true", "data.imgsz=64", override],
                            config_name="energy")
    with pytest.raises(SystemExit) as exc:
        energy(cfg)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
