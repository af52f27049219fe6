"""NIR export (GitHub issues #18, #25 item 8): the stage graphs run in snnTorch, norse, sinabs and nirtorch through
the importer lines of docs/user-guide.md (executed here as they are written there, on the stage files, and with
their commented line on the graphs NirBundle read), and every stage's outputs, the spike count of every neuron and
the detections equal the project's fixed-point spike-driven path (SpikeYOLO, T=1 and T=2) and the converted SNN
(Spiking-YOLO) exactly; every stage file of the default (typed) export passes ``nir.read(path)``'s own type check;
the input size is declared and enforced (a Detector on the stages letterboxes to it); the graph conventions, the
compact form and its group modes, the refusals and the command."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import spikeyolo
from spikeyolo.conversion import IBTNeuron, IFNeuron, SpikingConv, convert_detector
from spikeyolo.deploy.fixed_point import to_fixed_point
from spikeyolo.deploy.spike_driven import SpikeDrivenConv
from spikeyolo.errors import ExportError
from tests.conftest import randomize_bn

nir = pytest.importorskip("nir")

from spikeyolo.deploy.nir import DT, export_nir  # noqa: E402

IMGSZ = 64
CONSUMERS = ("snntorch", "norse", "sinabs", "nirtorch")
USER_GUIDE = Path(__file__).parent.parent / "docs" / "user-guide.md"

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:nirtorch.load is being deprecated:DeprecationWarning")]


def importer_blocks() -> dict[str, str]:
    """The ```python blocks of docs/user-guide.md that start with '# NIR consumer: NAME'."""
    blocks = re.findall(r"```python\n(# NIR consumer: (\w+)\n.*?)```", USER_GUIDE.read_text(), flags=re.S)
    return {name: code for code, name in blocks}


def run_documented(consumer: str, path: Path, images: torch.Tensor, on: str = "files") -> dict:
    """Execute the user guide's lines for ``consumer``; returns their namespace (exported, stages, decoded, maps).

    ``on="files"``: as written (the importer reads each stage file); ``"graphs"``: the block's commented
    ``# stages = ...`` line (the graphs NirBundle read) in place of the line above it.
    """
    pytest.importorskip(consumer)
    code = importer_blocks()[consumer]
    if on == "graphs":
        code, swapped = re.subn(r"^stages = .*\n# (stages = .*)$", r"\1", code, flags=re.M)
        assert swapped == 1, f"no commented graph line in the {consumer} block"
    namespace = {"path": str(path), "images": images}
    exec(compile(code, f"docs/user-guide.md ({consumer}, {on})", "exec"), namespace)
    return namespace


def fire_counts(stages: list[nn.Module]) -> list[float]:
    """Hooks that add up every firing node's output (the spikes) per stage while the stages run."""
    totals = [0.0] * len(stages)

    def add(number):
        def hook(_module, _inputs, out):
            totals[number] += float((out[0] if isinstance(out, tuple) else out).sum())
        return hook

    for number, stage in enumerate(stages):
        for name, module in stage.named_modules():
            if name.endswith("_fire"):
                module.register_forward_hook(add(number))
    return totals


def eight_bit(batch: int, seed: int, grid: int = 255) -> torch.Tensor:
    return torch.round(torch.rand(batch, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(seed)) * grid) / grid


def spikeyolo_model(time_steps: int, max_level: int, extra: tuple[str, ...] = ()) -> nn.Module:
    torch.manual_seed(0)
    cfg = spikeyolo.compose(["model.width_multiple=0.0625", f"neuron.time_steps={time_steps}",
                             f"neuron.max_level={max_level}", *extra])
    return randomize_bn(spikeyolo.build_model(cfg, num_classes=2), 0).eval()


def producer(model: nn.Module, value: str) -> nn.Module:
    """The module of the spike-driven model whose output is the stage output ``value`` (l4, l9_reduce, head_cls0)."""
    layer = re.fullmatch(r"l(\d+)(_reduce)?", value)
    if layer:
        module = model.layers[int(layer[1])]
        return module.reduce if layer[2] else module
    kind, level = re.fullmatch(r"head_(box|cls|pred)(\d+)", value).groups()
    head = model.layers[-1]
    return {"box": head.box_branches, "cls": head.cls_branches, "pred": getattr(head, "pred", None)}[kind][int(level)]


def spikeyolo_reference(model: nn.Module, images: torch.Tensor, report) -> tuple:
    """(decoded, maps, stage outputs [T*B, C, H, W], the sum of every neuron's spikes) of the fixed-point model."""
    fixed = to_fixed_point(model)
    captured, spikes = {}, [0.0]
    for number, value in enumerate(report.stage_outputs):
        producer(fixed, value).register_forward_hook(lambda _m, _i, out, number=number: captured.__setitem__(number, out))
    for module in fixed.modules():
        if isinstance(module, SpikeDrivenConv):  # every neuron of the network is in the graphs
            module.neuron.register_forward_hook(lambda _m, _i, out: spikes.__setitem__(0, spikes[0] + float(out.sum())))
    with torch.no_grad():
        decoded, maps = fixed(images)
    return decoded, maps, [captured[n] for n in range(len(report.stage_outputs))], spikes[0]


@pytest.fixture(scope="module", params=[(1, 4), (2, 2)], ids=["T1D4", "T2D2"])
def spikeyolo_export(request, tmp_path_factory):
    time_steps, max_level = request.param
    model = spikeyolo_model(time_steps, max_level)
    path = tmp_path_factory.mktemp("nir") / "model.nir"
    report = export_nir(model, path, IMGSZ)
    images = eight_bit(2, seed=1)
    return path, report, images, spikeyolo_reference(model, images, report)


@pytest.mark.parametrize("on", ["files", "graphs"])
@pytest.mark.parametrize("consumer", CONSUMERS)
def test_spikeyolo_runs_in_each_importer_exactly(spikeyolo_export, consumer, on):
    path, report, images, (ref_decoded, ref_maps, ref_stages, ref_spikes) = spikeyolo_export
    assert report.stage_outputs[:4] == ["l4", "l6", "l9_reduce", "l10"] and len(report.files) == 18
    assert report.exported_layers == [0, *range(1, 9), 10, 12, 14, 16, 18, 19, 20, 22, 23, 25]
    assert report.input_levels == 255 and report.typed and report.input_shape == [3, IMGSZ, IMGSZ]
    found = run_documented(consumer, path, images, on)
    assert torch.equal(found["decoded"], ref_decoded)
    assert all(torch.equal(a, b) for a, b in zip(found["maps"], ref_maps))
    exported, stages, outputs = found["exported"], found["stages"], []
    fired = fire_counts(stages)
    exported.run(stages, images, outputs)
    for steps, reference in zip(outputs, ref_stages):
        assert torch.equal(torch.cat(steps), reference)  # T steps of [B, C, H, W] -> [T*B, C, H, W]
    assert sum(fired) == ref_spikes and ref_spikes > 1000
    assert ref_decoded[:, 4:].std() > 1e-3  # the detections depend on the input


def test_stage_graph_conventions(spikeyolo_export):
    _, report, _, _ = spikeyolo_export
    for file in report.files:
        graph = nir.read(file)  # nir's own type check (its default): every edge joins equal shapes
        names = list(graph.nodes)  # nir.read's order (alphabetical)
        assert names[0] == "input" and names[-1] == "output"
        assert all(re.fullmatch(r"n\d{5}_[a-z0-9_]+", name) for name in names[1:-1])
        position = {name: i for i, name in enumerate(names)}
        backward = [(a, b) for a, b in graph.edges if position[a] >= position[b]]
        # the only edges against the order are the membranes' recurrent ones (T > 1)
        assert all(b.endswith("_potential") for _, b in backward) and (bool(backward) == (report.time_steps > 1))
        lifs = [node for node in graph.nodes.values() if isinstance(node, nir.LIF)]
        assert lifs and all(node.v_threshold.ndim == 3 and (node.tau == np.float32(DT)).all() for node in lifs)
        assert {int(node.groups) for node in graph.nodes.values() if isinstance(node, nir.Conv2d)} == {1}
        for source, target in graph.edges:  # what nir's check compared: the declared types
            assert list(graph.nodes[source].output_type["output"]) == list(graph.nodes[target].input_type["input"])
        assert not any(isinstance(node, (nir.Threshold, nir.IF)) for node in graph.nodes.values())
    report_text = report.message()
    for part in ("max-pooling", "layers 11, 15 Upsample", "layers 13, 17, 21, 24 Concat", "DFL", "rest.pt",
                 f"[3, {IMGSZ}, {IMGSZ}]", "nir.read(stage file) type-checks"):
        assert part in report_text


@pytest.fixture(scope="module")
def spiking_yolo():
    torch.manual_seed(0)
    ann = spikeyolo.build_model(spikeyolo.compose(["model=tiny_yolo", "model.width_multiple=0.0625"]),
                                num_classes=3)
    with torch.no_grad():
        for module in ann.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return ann.eval()


def converted(ann: nn.Module, neuron) -> nn.Module:
    snn = convert_detector(ann, [torch.rand(2, 3, IMGSZ, IMGSZ)], spiking_neuron=neuron, time_steps=6).eval()
    with torch.no_grad():  # weights on a 2^-10 grid: every membrane sum is exact in float32, in any order
        for module in snn.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.copy_(torch.round(module.weight * 1024) / 1024)
                if module.bias is not None:
                    module.bias.copy_(torch.round(module.bias * 1024) / 1024)
    return snn


def spiking_reference(snn: nn.Module, images: torch.Tensor) -> tuple:
    """(decoded, maps, per stage [T, B, C, H, W] spikes (hidden) or currents (last), hidden spike count)."""
    convs = [layer for layer in snn.network.layers if isinstance(layer, SpikingConv)]
    captured: list[list[torch.Tensor]] = [[] for _ in convs]
    for number, layer in enumerate(convs[:-1]):
        layer.neuron.register_forward_hook(lambda _m, _i, out, number=number: captured[number].append(out))
    convs[-1].conv.register_forward_hook(lambda _m, _i, out: captured[-1].append(out))
    with torch.no_grad():
        decoded, maps = snn(images)
    steps = [torch.cat(chunks) for chunks in captured[:-1]]
    steps.append(torch.cat(captured[-1]).view(-1, len(images), *captured[-1][0].shape[1:]))  # [T*B, ...] -> [T, B, ...]
    return decoded, maps, steps, sum(layer.neuron.num_spikes for layer in convs[:-1])


@pytest.mark.parametrize("consumer", CONSUMERS)
def test_spiking_yolo_runs_in_each_importer_exactly(spiking_yolo, tmp_path, consumer):
    snn = converted(spiking_yolo, partial(IBTNeuron, 1.0, 0.125))
    report = export_nir(snn, tmp_path / "snn.nir", IMGSZ)
    assert report.family == "spiking_yolo" and len(report.files) == 9 and report.time_steps == 6
    assert all(nir.read(file) for file in report.files)  # nir's own type check
    images = eight_bit(2, seed=1, grid=256)
    decoded, maps, ref_steps, ref_spikes = spiking_reference(snn, images)
    found = run_documented(consumer, tmp_path / "snn.nir", images)
    assert torch.equal(found["decoded"], decoded) and torch.equal(found["maps"][0], maps[0])
    exported, stages, outputs = found["exported"], found["stages"], []
    fired = fire_counts(stages)
    exported.run(stages, images, outputs)
    for steps, reference in zip(outputs, ref_steps):
        assert torch.equal(torch.stack(steps), reference)
    assert sum(fired) == ref_spikes and ref_spikes > 100
    assert (torch.stack(outputs[0]) < 0).any()  # the IBT neuron's negative spikes are in the graph


def test_spiking_yolo_plain_if_neuron(spiking_yolo, tmp_path):
    snn = converted(spiking_yolo, IFNeuron)
    export_nir(snn, tmp_path / "if.nir", IMGSZ)
    images = eight_bit(2, seed=2, grid=256)
    decoded, maps, _, _ = spiking_reference(snn, images)
    found = run_documented("norse", tmp_path / "if.nir", images)
    assert torch.equal(found["decoded"], decoded) and torch.equal(found["maps"][0], maps[0])


def test_reference_gen1_neuron_on_event_frames(tmp_path):
    """charge=lif (H = V + (X - V) / tau) at T = 2, fed an event clip [T, B, C, H, W] frame by frame."""
    model = spikeyolo_model(2, 4, ("neuron.decay=0.5", "neuron.charge=lif"))
    report = export_nir(model, tmp_path / "gen1.nir", IMGSZ)
    clip = torch.stack([eight_bit(2, seed=3), eight_bit(2, seed=4)])  # [T, B, C, H, W]
    with torch.no_grad():
        decoded, _ = to_fixed_point(model)(clip)
    found = run_documented("norse", tmp_path / "gen1.nir", clip)
    assert report.time_steps == 2 and torch.equal(found["decoded"], decoded)


@pytest.fixture(scope="module")
def single_step(tmp_path_factory):
    """A T = 1, D = 4 export with the default groups, its images and the fixed-point detections."""
    model = spikeyolo_model(1, 4)
    report = export_nir(model, tmp_path_factory.mktemp("t1") / "model.nir", IMGSZ)
    images = eight_bit(2, seed=1)
    with torch.no_grad():
        decoded, _ = to_fixed_point(model)(images)
    return model, report, images, decoded


@pytest.fixture(scope="module")
def compact(single_step, tmp_path_factory):
    """The compact form (typed=False) of the single-step model, default groups."""
    model = single_step[0]
    return export_nir(model, tmp_path_factory.mktemp("compact") / "compact.nir", IMGSZ, typed=False)


@pytest.mark.parametrize("groups", ["exact", "dense"])
def test_compact_group_modes(single_step, compact, tmp_path, groups):
    model, _, images, ref_decoded = single_step
    other = export_nir(model, tmp_path / f"{groups}.nir", IMGSZ, groups=groups, typed=False)
    written = [nir.read(file, type_check=False) for file in other.files]
    compatible = [nir.read(file, type_check=False) for file in compact.files]
    group_counts = {int(node.groups) for graph in written for node in graph.nodes.values()
                    if isinstance(node, nir.Conv2d)}
    if groups == "dense":
        assert group_counts == {1} and other.grouped_zero_fraction > compact.grouped_zero_fraction > 0
    else:
        assert max(group_counts) > 8 and other.grouped_zero_fraction == 0
        weights = [sum(node.weight.size for graph in graphs for node in graph.nodes.values()
                       if isinstance(node, nir.Conv2d)) for graphs in (written, compatible)]
        assert weights[0] < weights[1]  # (on disk gzip hides the zeros)
    assert torch.equal(run_documented("nirtorch", tmp_path / f"{groups}.nir", images, "graphs")["decoded"],
                       ref_decoded)


def test_compact_form_fails_nirs_type_check_and_runs_on_graphs(single_step, compact):
    """Why typed is the default: nir 1.0.8 types a grouped conv's input as one group's channels and a neuron as
    its parameters' shape, so no compact stage passes nir.read's check (docs/user-guide.md, NIR)."""
    _, typed, images, ref_decoded = single_step
    for file in compact.files:
        with pytest.raises(ValueError, match="type mismatch"):
            nir.read(file)
    lif = next(node for node in nir.read(compact.files[0], type_check=False).nodes.values()
               if isinstance(node, nir.LIF))
    assert lif.v_threshold.shape == (1,) and not compact.typed and compact.input_shape == typed.input_shape
    assert torch.equal(run_documented("norse", Path(compact.file), images, "graphs")["decoded"], ref_decoded)
    with pytest.raises(ValueError, match="type mismatch"):  # an importer given a compact path checks it too
        run_documented("norse", Path(compact.file), images, "files")
    written = [sum(node.weight.size for node in nir.read(file, type_check=False).nodes.values()
                   if isinstance(node, nir.Conv2d)) for file in (compact.files[1], typed.files[1])]
    assert written[0] < written[1]  # typed convs are dense


def picture(height: int, width: int, seed: int) -> np.ndarray:
    return torch.randint(0, 256, (height, width, 3), generator=torch.Generator().manual_seed(seed)).numpy().astype(
        np.uint8)


def test_input_size_declared_and_enforced(single_step):
    """The graphs take [3, imgsz, imgsz] only; a Detector on the stages letterboxes pictures to that square and
    equals the fixed-point model's Detector letterboxing the same way (rect=False), box for box."""
    from spikeyolo.api import Detector
    from spikeyolo.deploy.nir import NirBundle
    from spikeyolo.errors import ExportError as Refused

    model, report, images, _ = single_step
    found = run_documented("norse", Path(report.file), images)
    exported, stages = found["exported"], found["stages"]
    assert exported.input_shape == (3, IMGSZ, IMGSZ) == tuple(report.input_shape) and exported.imgsz == IMGSZ
    assert list(exported.graphs[0].nodes["input"].input_type["input"]) == [3, IMGSZ, IMGSZ]
    rect = torch.nn.functional.pad(images, (0, 0, 0, 32))  # [B, 3, 96, 64]: what a rect letterbox gives
    with pytest.raises(Refused, match=f"take images \\[B, 3, {IMGSZ}, {IMGSZ}\\].*letterbox") as err:
        exported.run(stages, rect)
    assert "\n" not in str(err.value)
    pictures = [picture(40, 70, seed=1), picture(90, 50, seed=2)]
    nir_detector = Detector.from_nir(NirBundle.load(report.file), stages, names=["a", "b"])
    reference = Detector(model=to_fixed_point(model).eval(), names=["a", "b"], imgsz=IMGSZ, rect=False)
    ours, theirs = nir_detector.predict(pictures, conf=1e-9), reference.predict(pictures, conf=1e-9)
    assert nir_detector.rect is False and nir_detector.imgsz == IMGSZ
    for mine, expected in zip(ours, theirs):
        assert len(expected) > 0 and np.array_equal(mine.boxes, expected.boxes)
        assert np.array_equal(mine.scores, expected.scores) and np.array_equal(mine.classes, expected.classes)


def test_refusals_are_one_line(spiking_yolo, tmp_path):
    with pytest.raises(ExportError, match="convert it first") as err:
        export_nir(spiking_yolo, tmp_path / "ann.nir", IMGSZ)
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())
    with pytest.raises(ExportError, match="groups must be one of"):
        export_nir(spikeyolo_model(1, 4), tmp_path / "x.nir", IMGSZ, groups="depthwise")


def test_export_command_on_a_multi_step_model(tmp_path):
    """spikeyolo-export format=nir on a T = 2 checkpoint writes stage graphs that run (no refusal)."""
    from spikeyolo.cli.export import export
    from spikeyolo.config import model_config
    from spikeyolo.engine.checkpoint import save_checkpoint

    model = spikeyolo_model(2, 2)
    cfg = spikeyolo.compose(["model.width_multiple=0.0625", "neuron.time_steps=2", "neuron.max_level=2"])
    checkpoint = save_checkpoint({"model_config": model_config(cfg, 2), "model": model.state_dict(), "ema": None,
                                  "names": ["a", "b"], "train_config": "data:\n  imgsz: 64\n"}, tmp_path / "best.pt")
    report = export(spikeyolo.compose([f"checkpoint={checkpoint}", f"run_dir={tmp_path / 'run'}", "format=nir"],
                                      config_name="export"))
    assert report["time_steps"] == 2 and len(report["files"]) == 18 and report["typed"]
    assert all(nir.read(file) for file in report["files"])  # the command's default passes nir's own type check
    images = eight_bit(2, seed=5)
    with torch.no_grad():
        decoded, _ = to_fixed_point(model)(images)
    assert torch.equal(run_documented("norse", Path(report["file"]), images)["decoded"], decoded)
