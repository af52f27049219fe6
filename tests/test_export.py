"""Export: ONNX (integer and spike-driven paths) against onnxruntime, the NIR files the command writes (the NIR
graphs run in the consumers' importers in tests/test_nir.py), and the pure-numpy integer block simulator against
the PyTorch block."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import spikeyolo
from spikeyolo.deploy import to_spike_driven

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
nir = pytest.importorskip("nir")

from spikeyolo.deploy.export import ExportError, export_onnx  # noqa: E402
from spikeyolo.deploy.int_sim import compile_block, fire, quantize, snap_to_grid  # noqa: E402
from spikeyolo.deploy.nir import export_nir  # noqa: E402
from tests.conftest import randomize_bn

IMGSZ = 64


# tiny convs: one thread avoids OpenMP spin contention on a shared 2-core box (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def build(time_steps: int = 1, max_level: int = 4, seed: int = 0, num_classes: int = 2,
          extra: tuple[str, ...] = ()) -> nn.Module:
    """The real n layer list at width 1/16, with 'trained' BN statistics so that every layer fires."""
    torch.manual_seed(seed)
    cfg = spikeyolo.compose(["model.width_multiple=0.0625", f"neuron.time_steps={time_steps}",
                             f"neuron.max_level={max_level}", *extra])
    model = spikeyolo.build_model(cfg, num_classes=num_classes)
    return randomize_bn(model, seed).eval()


def images(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("path,time_steps,max_level", [("integer", 1, 4), ("spike_driven", 1, 4),
                                                       ("spike_driven", 2, 2)])
def test_onnx_matches_pytorch_with_dynamic_batch(tmp_path, path, time_steps, max_level):
    import onnxruntime as ort

    model = build(time_steps, max_level)
    file = tmp_path / f"{path}.onnx"
    report = export_onnx(model, file, IMGSZ, path=path, check_images=images(3))
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4, report
    assert report.check_batch == 3 and report.opset == 17
    anchors = (IMGSZ // 8) ** 2 + (IMGSZ // 16) ** 2 + (IMGSZ // 32) ** 2
    assert report.output_shape == ["batch", 4 + 2, anchors]

    graph = onnx.load(str(file))
    onnx.checker.check_model(graph)
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    ops = {node.op_type for node in graph.graph.node}
    assert "Round" in ops and "Clip" in ops  # Eq. 11 in the graph
    if path == "spike_driven":
        assert "Less" in ops  # the thermometer expansion (k < S)
    # the comparison is not trivial: the network responds to its input
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    out = session.run(None, {"images": images(2, seed=7).numpy()})[0]
    assert out.shape == (2, 6, anchors) and np.abs(out[0] - out[1]).max() > 1e-3
    with torch.no_grad():
        reference = (to_spike_driven(model) if path == "spike_driven" else model)(images(2, seed=7))[0].numpy()
    assert np.abs(out[:, 4:] - reference[:, 4:]).max() < 1e-4  # scores
    assert np.abs(out[:, :4] - reference[:, :4]).max() < 1e-4 * IMGSZ  # boxes, pixels


@pytest.mark.parametrize("path,time_steps,max_level", [("integer", 1, 4), ("spike_driven", 1, 4),
                                                       ("spike_driven", 2, 2)])
def test_fixed_point_onnx_reproduces_pytorch_spikes(tmp_path, path, time_steps, max_level):
    from spikeyolo.deploy.fixed_point import to_fixed_point

    model = build(time_steps, max_level, seed=4)
    report = export_onnx(model, tmp_path / "fx.onnx", IMGSZ, path=path, check_images=images(3, seed=4),
                         fixed_point=True)
    # identical spikes: only the decode after the last exact sum rounds (float32 ulps)
    assert report.fixed_point and report.max_abs_diff < 1e-5, report
    assert any("fixed-point" in note for note in report.notes)
    with torch.no_grad():  # the exported model is the fixed-point one, not the float one
        fixed = to_fixed_point(model, expand=path == "spike_driven")(images(2, seed=9))[0]
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "fx.onnx"), providers=["CPUExecutionProvider"])
    out = torch.from_numpy(session.run(None, {"images": images(2, seed=9).numpy()})[0])
    assert (out[:, 4:] - fixed[:, 4:]).abs().max() < 1e-5 and (out[:, :4] - fixed[:, :4]).abs().max() < 1e-5 * IMGSZ


@pytest.mark.parametrize("path,time_steps", [("integer", 2), ("spike_driven", 1)])
def test_onnx_of_the_reference_gen1_neuron(tmp_path, path, time_steps):
    """charge=lif (the reference Gen1 LIF, H = V + (X - V) / tau) is exported as that recursion, not the I-LIF's:
    onnxruntime equals PyTorch, and a graph built with the I-LIF recursion would not."""
    from spikeyolo.deploy.export import OnnxILIF

    model = build(time_steps, 4, seed=2, extra=("neuron.decay=0.5", "neuron.charge=lif"))
    report = export_onnx(model, tmp_path / "lif.onnx", IMGSZ, path=path, check_images=images(2, seed=5))
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4, report
    x = torch.randn(time_steps * 3, 2, 4, 4) * 3
    lif = OnnxILIF(time_steps, 4, 0.5, charge="lif")
    assert torch.equal(lif(x), spikeyolo.nn.neurons.ILIF(time_steps, 4, 0.5, charge="lif")(x))
    assert not torch.equal(lif(x), OnnxILIF(time_steps, 4, 0.5)(x))
    nir_report = export_nir(model, tmp_path / "lif.nir", IMGSZ)  # the same neuron in NIR (run: tests/test_nir.py)
    assert nir_report.exported_layers[-1] == 25 and nir_report.time_steps == time_steps  # every conv: layers 0-25


def test_onnx_refuses_bad_size_path_and_opset(tmp_path):
    model = build()
    with pytest.raises(ExportError, match="multiple of the model's largest stride 32"):
        export_onnx(model, tmp_path / "x.onnx", 48)
    with pytest.raises(ExportError, match="path must be one of"):
        export_onnx(model, tmp_path / "x.onnx", IMGSZ, path="binary")
    with pytest.raises(ExportError, match="opset >= 11"):
        export_onnx(model, tmp_path / "x.onnx", IMGSZ, opset=10)
    assert not (tmp_path / "x.onnx").exists()


# --------------------------------------------------------------------------- integer simulator


def test_fire_is_round_half_even_and_clipped():
    frac = 8
    membrane = quantize(np.array([-1.0, 0.49, 0.5, 0.51, 1.5, 2.5, 3.5, 9.0]), frac)
    assert fire(membrane, frac, 4).tolist() == [0, 0, 0, 1, 2, 2, 4, 4]
    assert torch.round(torch.tensor([0.5, 1.5, 2.5, 3.5])).tolist() == [0, 2, 2, 4]


@pytest.mark.parametrize("time_steps,max_level", [(1, 4), (2, 2)])
def test_integer_simulator_equals_the_pytorch_block(time_steps, max_level):
    frac_bits = 12
    model = build(time_steps, max_level).double()
    spike_model = to_spike_driven(model)
    inputs = {}
    for index in (2, 6):  # SNN-Block-1 (AllConvBlock) and three SNN-Block-2 (ConvBlock)
        spike_model.layers[index].register_forward_pre_hook(
            lambda _m, args, index=index: inputs.update({index: args[0]}))
    with torch.no_grad():
        spike_model(images(2).double())
    for index in (2, 6):
        block = spike_model.layers[index]
        x_code = quantize(inputs[index], frac_bits)
        # the unsnapped float32 block: fixed point rounds weights, so only close
        original = compile_block(block, frac_bits).run(x_code) / 2 ** frac_bits
        with torch.no_grad():
            reference = block.float()(torch.from_numpy(x_code / 2 ** frac_bits).float()).double().numpy()
        assert np.abs(original - reference).mean() < 0.05 * np.abs(reference).mean()
        # weights snapped to the grid: PyTorch (float64) and the integer program agree exactly
        block = snap_to_grid(block.double(), frac_bits)
        program = compile_block(block, frac_bits)
        out_code = program.run(x_code)
        with torch.no_grad():
            exact = block(torch.from_numpy(x_code).double() / 2 ** frac_bits).numpy() * 2 ** frac_bits
        assert out_code.dtype == np.int64 and out_code.shape == exact.shape
        assert np.array_equal(out_code, exact)
        assert sum(conv.spikes_seen for conv in program.convs()) > 0


# --------------------------------------------------------------------------- the CLI's export function


def test_export_command_writes_onnx_and_nir(tmp_path):
    from spikeyolo.cli.export import export
    from spikeyolo.config import model_config
    from spikeyolo.engine.checkpoint import save_checkpoint

    model = build()
    cfg = spikeyolo.compose(["model.width_multiple=0.0625"])
    checkpoint = save_checkpoint({"model_config": model_config(cfg, 2), "model": model.state_dict(), "ema": None,
                                  "names": ["a", "b"], "train_config": "data:\n  imgsz: 64\n"}, tmp_path / "best.pt")
    report = export(spikeyolo.compose([f"checkpoint={checkpoint}", f"run_dir={tmp_path / 'onnx'}",
                                       "path=spike_driven"], config_name="export"))
    assert report["imgsz"] == 64 and report["max_abs_diff"] < 1e-4
    assert (tmp_path / "onnx" / "model_spike_driven.onnx").is_file()
    assert json.loads((tmp_path / "onnx" / "export.json").read_text())["path"] == "spike_driven"
    report = export(spikeyolo.compose([f"checkpoint={checkpoint}", f"run_dir={tmp_path / 'nir'}", "format=nir"],
                                      config_name="export"))
    assert report["exported_layers"][-1] == 25 and all(nir.read(f, type_check=False) for f in report["files"])
