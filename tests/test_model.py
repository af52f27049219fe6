"""SpikeYOLO model family: exact parameter counts, shapes, forward contract, reference keys, checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch

import spikeyolo
from spikeyolo.conversion import convert_detector
from spikeyolo.engine.checkpoint import CheckpointError, load_weights, read_checkpoint, save_checkpoint
from spikeyolo.nn.protocol import DetectorModel
from spikeyolo.nn.reference import ReferenceKeyError, convert_reference_state_dict, reference_to_spikeyolo_key
from tests.conftest import tiny_model

# shared/reference/spikeyolo-architecture.md, section 6 (m and l with layer 25's mlp ratio 2)
EXPECTED_PARAMS = {("n", 80): 13_271_632, ("s", 80): 23_153_024, ("m", 80): 47_841_856, ("l", 80): 68_478_400,
                   ("s", 2): 23_122_838}
EXPECTED_KEYS = {"n": 755, "s": 755, "m": 947, "l": 947}
S_LAYER_PARAMS = {1: 9_600, 2: 319_680, 3: 74_112, 4: 2_523_904, 5: 295_680, 6: 4_071_168, 7: 1_181_184,
                  8: 3_492_864, 9: 656_896, 10: 131_584, 12: 1_357_056, 14: 65_792, 16: 1_261_952, 18: 33_024,
                  19: 1_261_952, 20: 147_712, 22: 1_357_056, 23: 590_336, 25: 2_174_464, 26: 2_147_008}


@pytest.fixture(scope="module")
def full_models():
    cache = {}

    def get(scale, num_classes=80):
        if (scale, num_classes) not in cache:
            cfg = spikeyolo.compose([f"model=spikeyolo_{scale}"])
            cache[(scale, num_classes)] = spikeyolo.build_model(cfg, num_classes=num_classes)
        return cache[(scale, num_classes)]

    return get


@pytest.mark.parametrize("scale,num_classes", list(EXPECTED_PARAMS))
def test_exact_parameter_counts(full_models, scale, num_classes):
    model = full_models(scale, num_classes)
    assert model.num_parameters() == EXPECTED_PARAMS[(scale, num_classes)]
    assert model.num_parameters(trainable_only=True) == EXPECTED_PARAMS[(scale, num_classes)] - 16  # frozen DFL
    assert len(model.state_dict()) == EXPECTED_KEYS[scale]
    assert model.strides == [8, 16, 32]


def test_per_layer_parameters_of_s(full_models):
    model = full_models("s")
    for index, expected in S_LAYER_PARAMS.items():
        assert sum(p.numel() for p in model.layers[index].parameters()) == expected, index


def test_bias_init_and_bn_settings(full_models):
    model = full_models("s")
    head = model.head
    assert torch.allclose(head.box_branches[0][-1].conv.bias, torch.ones(64))
    expected = [-11.5366, -10.1503, -8.7641]
    for level, value in enumerate(expected):
        assert head.cls_branches[level][-1].conv.bias[0].item() == pytest.approx(value, abs=1e-4)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)


@pytest.mark.parametrize("scale", ["n", "s", "m", "l"])
@pytest.mark.parametrize("size", [64, 320])
def test_output_shapes_full_scale(full_models, scale, size):
    model = full_models(scale).eval()
    with torch.no_grad():
        decoded, maps = model(torch.rand(1, 3, size, size))
    anchors = sum((size // s) ** 2 for s in (8, 16, 32))
    assert decoded.shape == (1, 84, anchors)
    assert [tuple(m.shape) for m in maps] == [(1, 144, size // s, size // s) for s in (8, 16, 32)]
    model.train()


def test_training_mode_returns_raw_maps_and_backprops():
    model = tiny_model("s", num_classes=3)
    maps = model(torch.rand(2, 3, 64, 64))
    assert isinstance(maps, list) and [tuple(m.shape) for m in maps] == [(2, 67, 8, 8), (2, 67, 4, 4), (2, 67, 2, 2)]
    sum(m.sum() for m in maps).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)


@pytest.mark.parametrize("time_steps", [1, 2])
def test_event_input_and_state_reset(time_steps):
    model = tiny_model("s", extra=(f"neuron.time_steps={time_steps}",)).eval()
    clip = torch.rand(time_steps, 2, 3, 64, 64)
    with torch.no_grad():
        first, _ = model(clip)
        second, _ = model(clip)
    assert torch.equal(first, second)  # neuron state is reset once per forward
    assert first.shape == (2, 4 + 3, 84)
    with pytest.raises(ValueError, match="time steps"):
        model(torch.rand(time_steps + 1, 2, 3, 64, 64))


def test_static_image_is_repeated_over_time():
    model = tiny_model("s", extra=("neuron.time_steps=2",)).eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        from_image, _ = model(image)
        from_clip, _ = model(image.unsqueeze(0).expand(2, -1, -1, -1, -1))
    assert torch.equal(from_image, from_clip)


def test_decoded_boxes_follow_dfl_expectation():
    model = tiny_model("s", num_classes=1).eval()
    maps = [torch.zeros(1, 65, s, s) for s in (8, 4, 2)]
    decoded = model.head.decode(maps)  # uniform bins -> every distance is 7.5 cells
    first = decoded[0, :, 0]  # anchor (0.5, 0.5) at stride 8
    assert torch.allclose(first[:4], torch.tensor([4.0, 4.0, 15 * 8.0, 15 * 8.0]))
    assert first[4].item() == pytest.approx(0.5)


def _reference_state_dict(fixtures, scale):
    state = {}
    lines = (fixtures / "reference" / f"spikeyolo_{scale}_state_dict.tsv").read_text().splitlines()[1:]
    for index, line in enumerate(lines):
        key, shape, _ = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        state[key] = torch.full(dims, float(index)) if dims else torch.tensor(index)
    return state


@pytest.mark.parametrize("scale", ["n", "s"])
def test_reference_state_dict_maps_one_to_one(full_models, fixtures, scale):
    model = full_models(scale)
    reference = _reference_state_dict(fixtures, scale)
    converted = convert_reference_state_dict(reference, model)
    assert len(converted) == len(reference) == len(model.state_dict())
    # values travel with their key: check a few translations by hand
    assert reference_to_spikeyolo_key(model, "model.1.encode_conv.weight") == "layers.1.conv.weight"
    assert (reference_to_spikeyolo_key(model, "model.6.2.conv1.body.2.1.weight")
            == "layers.6.2.mixer1.pw_out.weight")
    assert (reference_to_spikeyolo_key(model, "model.2.Conv.pwconv3.body.0.bn.running_var")
            == "layers.2.token_mixer.pw_project.pad_bn.bn.running_var")
    assert reference_to_spikeyolo_key(model, "model.26.cv3.1.2.conv.bias") == "layers.26.cls_branches.1.2.conv.bias"
    assert reference_to_spikeyolo_key(model, "model.9.cv2.bn.weight") == "layers.9.fuse.bn.weight"
    model.load_state_dict(converted)
    assert torch.equal(model.state_dict()["layers.1.conv.weight"], reference["model.1.encode_conv.weight"])


def test_reference_mismatch_lists_keys(full_models, fixtures):
    model = full_models("n")
    reference = _reference_state_dict(fixtures, "s")  # wrong scale
    with pytest.raises(ReferenceKeyError, match="shape mismatches"):
        convert_reference_state_dict(reference, model)
    reference = _reference_state_dict(fixtures, "n")
    reference["model.99.foo.weight"] = torch.zeros(1)
    del reference["model.1.encode_bn.bias"]
    with pytest.raises(ReferenceKeyError, match=r"model\.99\.foo\.weight.*not covered: layers\.1\.bn\.bias"):
        convert_reference_state_dict(reference, model)


def test_checkpoint_round_trip_and_wrong_architecture(tmp_path):
    cfg = spikeyolo.compose(["model=spikeyolo_s", *("model.width_multiple=0.0625",)])
    model = spikeyolo.build_model(cfg, num_classes=3)
    from spikeyolo.config import model_config

    path = save_checkpoint({"model_config": model_config(cfg, 3), "model": model.state_dict(), "ema": None,
                            "names": ["a", "b", "c"]}, tmp_path / "w.pt")
    loaded = spikeyolo.load_checkpoint(path)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(image)[0], model.eval()(image)[0])
    assert loaded.names == ["a", "b", "c"]
    other = spikeyolo.build_model(spikeyolo.compose(["model=spikeyolo_m", "model.width_multiple=0.0625"]), 3)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_weights(other, read_checkpoint(path))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(tmp_path / "bad.pt")


@pytest.mark.parametrize("kernel,padding", [(7, 3), (3, 0), (3, 1)])
def test_depthwise_conv_backward_equals_autograd(kernel, padding):
    from spikeyolo.nn.layers import DepthwiseConv2d

    torch.manual_seed(kernel + padding)
    fast = DepthwiseConv2d(6, kernel, padding).double()
    plain = torch.nn.Conv2d(6, 6, kernel, padding=padding, groups=6, bias=False).double()
    plain.load_state_dict(fast.state_dict())  # same keys and shapes as nn.Conv2d
    x = torch.randn(3, 6, 11, 9, dtype=torch.float64)
    grads = []
    for module in (fast, plain):
        inp = x.clone().requires_grad_(True)
        out = module(inp)
        out.backward(torch.cos(out))  # a non-uniform upstream gradient
        grads.append((out.detach(), inp.grad, module.weight.grad))
    for a, b in zip(*grads):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # inference takes the plain path
        assert torch.equal(fast(x), plain(x))


def test_time_steps_live_once_and_setting_them_changes_every_layer():
    model = tiny_model("s").eval()
    assert model.time_steps == 1 and all(neuron.coding is model.coding for _, neuron in model.neurons())
    assert model.layers[0].coding is model.coding and model.head.coding is model.coding
    keys = set(model.state_dict())
    built_at_two = tiny_model("s", extra=("neuron.time_steps=2",)).eval()
    built_at_two.load_state_dict(model.state_dict())
    model.time_steps = 2
    assert {neuron.time_steps for _, neuron in model.neurons()} == {2} and model.layers[0].time_steps == 2
    clip = torch.rand(2, 1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(clip)[0], built_at_two(clip)[0])
    with pytest.raises(ValueError, match=r"time_steps \(T\) must be >= 1"):
        model.time_steps = 0
    twin = copy.deepcopy(model)  # an EMA copy: one coding of its own, shared by all its layers
    assert twin.coding is not model.coding and all(neuron.coding is twin.coding for _, neuron in twin.neurons())
    assert set(model.state_dict()) == keys == set(built_at_two.state_dict())  # T and D are not in the state_dict


def test_every_model_family_is_a_detector_model():
    spiking = tiny_model("s")
    relu_twin = tiny_model("s", extra=("neuron=relu",))
    ann = spikeyolo.build_model(spikeyolo.compose(["model=tiny_yolo", "model.width_multiple=0.0625"]), num_classes=3)
    snn = convert_detector(ann, [torch.rand(2, 3, 64, 64)], time_steps=8)
    for model in (spiking, relu_twin, ann, snn):
        assert isinstance(model, DetectorModel)
        assert model.names == ["0", "1", "2"] and model.num_classes == 3 and model.in_chs == 3
        assert model.num_parameters() > 0 and callable(model.build_loss())
    assert (spiking.time_steps, spiking.max_level, spiking.strides) == (1, 4, [8, 16, 32])
    assert (relu_twin.time_steps, relu_twin.max_level) == (1, 0)
    assert (ann.time_steps, ann.max_level, ann.strides) == (None, None, [32])
    assert (snn.time_steps, snn.max_level, snn.strides) == (8, None, [32])
    snn.time_steps = 16
    assert snn.network.time_steps == 16
    ann.names = ["tree", "bush", "rock"]
    assert ann.names == ["tree", "bush", "rock"]
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        plain = ann.eval()(images)[0]
        with ann.streaming():  # an ANN carries nothing
            assert ann.is_streaming and torch.equal(ann(images)[0], plain) and torch.equal(ann(images)[0], plain)
    assert not ann.is_streaming
    with pytest.raises(NotImplementedError, match="no streaming mode"):
        snn.streaming()
