"""ONNX export of a SpikeYOLO, on the integer path or the spike-driven path, checked with onnxruntime.

The exported graph is the eval forward of the model without NMS:

    input   ``images``      [batch, in_chs, H, W] float32 in [0, 1]   (batch is dynamic; H, W are fixed)
    output  ``detections``  [batch, 4 + num_classes, A] float32: xywh in input pixels and class scores
                            (A anchors over the three levels; the anchor grid is baked in for H x W)

Operators: Conv, Add, Mul, Sub, Clip, Round, Less, Cast, Reshape, Concat, Resize, MaxPool, Softmax,
Sigmoid, ... at ``DEFAULT_OPSET`` (17; Round needs >= 11). ONNX ``Round`` rounds half to even, as
``torch.round`` and Eq. 11 do.

The I-LIF neuron (spikeyolo.nn.neurons) trains through a custom autograd Function and, for T > 1,
through spikingjelly's registered ``sj_ilif`` operator; neither exports. Export therefore runs on a
copy of the model whose neurons are :class:`OnnxILIF`: the same forward (Eq. 8-11) written in
plain tensor ops (round(clamp(H, 0, D)) per step, the membrane recursion unrolled over T). The
original model is not modified, and the export is checked against it, not against the copy.

The spike-driven path is :func:`spikeyolo.deploy.to_spike_driven` (thermometer expansion to T x D
binary maps before every post-neuron conv) exported the same way.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spikeyolo.deploy.fixed_point import to_fixed_point
from spikeyolo.deploy.spike_driven import to_spike_driven
from spikeyolo.errors import ExportError
from spikeyolo.nn.neurons import SpikingNeuron, run_steps

__all__ = ["DEFAULT_OPSET", "ExportError", "OnnxExportReport", "OnnxILIF", "onnx_ready", "export_onnx",
           "check_onnx", "prepare_path"]

DEFAULT_OPSET = 17
PATHS = ("integer", "spike_driven")


class OnnxILIF(SpikingNeuron):
    """I-LIF forward (Eq. 8-11) in plain tensor ops, for graph export; no gradient, no carried membrane.

        charge "ilif": H[0] = X[0];  H[t] = decay * (H[t-1] - S[t-1]) + X[t]
        charge "lif":  H[t] = V[t-1] + (X[t] - V[t-1]) / tau, V[-1] = 0, V[t] = H[t] - S[t]  (reference Gen1)
        S[t] = round_half_even(clip(H[t], 0, D))

    The recursion is the training-time neuron's own (:func:`~spikeyolo.nn.neurons.run_steps`, in the float order
    of :class:`~spikeyolo.nn.neurons.ILIF`) with round(clamp) as the firing function.

    Args:
        time_steps: T.
        max_level: D.
        decay: membrane decay (the factor spikingjelly uses, 1 - 1/tau, when the neuron has one).
        charge: ``ilif`` or ``lif`` (then ``tau`` = 1 / (1 - decay) as the neuron computes it).
    """

    def __init__(self, time_steps: int, max_level: int, decay: float, charge: str = "ilif",
                 tau: float | None = None) -> None:
        super().__init__(time_steps, max_level)
        if charge not in ("ilif", "lif"):
            raise ValueError(f"charge must be 'ilif' or 'lif', got {charge!r}")
        self.decay = float(decay)
        self.charge = charge
        self.tau = float(tau) if tau is not None else 1.0 / (1.0 - self.decay) if charge == "lif" else None

    @classmethod
    def like(cls, neuron: SpikingNeuron) -> "OnnxILIF":
        """The export form of ``neuron`` (its ``charge_rule``), reading the same T and D (its ``coding``).

        Raises:
            ExportError: the neuron has no charge rule to rebuild it from.
        """
        rule = neuron.charge_rule
        if rule is None:
            raise ExportError(f"{type(neuron).__name__} neither exports to ONNX as it is (exports_as_is) nor has a "
                              f"charge_rule to rebuild it from")
        ready = cls(neuron.time_steps, neuron.max_level, rule.step_decay, rule.charge, rule.tau)
        ready.coding = neuron.coding
        return ready

    @staticmethod
    def _fire(membrane: torch.Tensor, max_level: int) -> torch.Tensor:
        return torch.round(torch.clamp(membrane, 0.0, float(max_level)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.charge == "ilif" and self.time_steps == 1:
            return self._fire(x, self.max_level)
        # [T*B, C, H, W] -> [T, B*C*H*W]
        steps = x.reshape(self.time_steps, -1)
        spikes, _ = run_steps(steps, self._fire, self.max_level, self.decay, self.tau if self.charge == "lif" else None)
        # [T, B*C*H*W] -> [T*B, C, H, W]
        return spikes.reshape(x.shape)

    def extra_repr(self) -> str:
        charge = f", charge=lif, tau={self.tau}" if self.charge == "lif" else ""
        return f"{super().extra_repr()}, decay={self.decay}{charge}"


def onnx_ready(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode whose neurons that do not export as they are (``exports_as_is`` false:
    the I-LIF) are :class:`OnnxILIF` (same outputs)."""
    ready = copy.deepcopy(model).eval()
    for parent in list(ready.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SpikingNeuron) and not child.exports_as_is:
                setattr(parent, name, OnnxILIF.like(child))
    return ready


class _Detections(nn.Module):
    """The eval forward without the raw maps: images -> decoded detections."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        output = self.model(images)
        return output[0] if isinstance(output, (tuple, list)) else output


def prepare_path(model: nn.Module, path: str, fixed_point: bool = False,
                 mantissa_bits: int | None = None) -> nn.Module:
    """The model to export for ``path``: ``integer`` (as trained) or ``spike_driven`` (T x D binary spikes).

    With ``fixed_point`` both paths are the folded model of :func:`spikeyolo.deploy.fixed_point.to_fixed_point`
    (power-of-two weight grids, exact float32 sums): onnxruntime then reproduces PyTorch's spikes bit for bit.
    """
    if path not in PATHS:
        raise ExportError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
    if fixed_point:
        return to_fixed_point(model, mantissa_bits=mantissa_bits, expand=path == "spike_driven")
    if path == "integer":
        return model.eval()
    if path == "spike_driven":
        return to_spike_driven(model)
    raise ExportError(f"path must be one of {', '.join(PATHS)}, got {path!r}")


def _check_imgsz(model: nn.Module, imgsz: int) -> None:
    stride = max(model.strides)
    if int(imgsz) < stride or int(imgsz) % stride:
        raise ExportError(f"imgsz={imgsz} is not a multiple of the model's largest stride {stride}")


@dataclass
class OnnxExportReport:
    """What was exported and how well onnxruntime reproduces PyTorch.

    Attributes:
        file: the .onnx file.
        path: ``integer`` or ``spike_driven``.
        opset: ONNX opset.
        input_shape, output_shape: with the dynamic batch shown as ``batch``.
        max_abs_diff: max |onnxruntime - PyTorch| over the detections of the check batch, with the boxes in
            units of the image size (xywh / imgsz) so that every entry is O(1) like the scores (None: not
            checked). Float32 rounding alone is a few 1e-8 here; a rounding flip of a neuron is far larger.
        max_abs_diff_pixels: the same with the boxes in pixels (float32 resolution at 500 px is 3e-5).
        check_batch: images in the check batch (a batch size other than the traced one, exercising the dynamic axis).
        fixed_point: the export is the fixed-point form (exact float32 sums; see spikeyolo.deploy.fixed_point).
        onnxruntime: version used for the check.
        seconds: export + check wall time.
    """

    file: str
    path: str
    opset: int
    input_shape: list[Any]
    output_shape: list[Any]
    max_abs_diff: float | None = None
    max_abs_diff_pixels: float | None = None
    check_batch: int = 0
    fixed_point: bool = False
    onnxruntime: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require(module: str, extra: str = "export") -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ExportError(f"{module} is not installed: pip install 'spikeyolo[{extra}]'") from None


@torch.no_grad()
def check_onnx(file: str | Path, reference: nn.Module, images: torch.Tensor) -> tuple[float, float]:
    """|onnxruntime(file)(images) - reference(images)| of the detections [B, 4 + nc, A], both in float32.

    Returns:
        (max abs diff with the xywh rows divided by the image size, max abs diff with boxes in pixels).
    """
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    (ort_out,) = session.run(["detections"], {"images": images.float().numpy()})
    diff = (torch.from_numpy(ort_out) - _Detections(reference.eval())(images.float())).abs()
    scale = torch.ones(diff.shape[1], 1)
    scale[:4] = float(images.shape[-1])  # [4 + nc, 1]: boxes in units of the image size
    return float((diff / scale).max()), float(diff.max())


def export_onnx(model: nn.Module, file: str | Path, imgsz: int, path: str = "integer",
                opset: int = DEFAULT_OPSET, check: bool = True, check_images: torch.Tensor | None = None,
                check_batch: int = 2, fixed_point: bool = False, mantissa_bits: int | None = None) -> OnnxExportReport:
    """Export ``model`` (its ``path``) to ONNX with a dynamic batch axis and check it with onnxruntime.

    Args:
        model: a SpikeYOLO in float32 (not modified).
        file: the .onnx file to write (its folder is created).
        imgsz: square input size (a multiple of the largest stride); the anchor grid is fixed to it.
        path: ``integer`` or ``spike_driven``.
        opset: ONNX opset (>= 11).
        check: run onnxruntime on ``check_images`` and compare with PyTorch.
        check_images: [N, in_chs, imgsz, imgsz] in [0, 1]; default ``check_batch`` random images.
        fixed_point: export the fixed-point form (spikeyolo.deploy.fixed_point): exact float32 sums, so the
            check compares identical spikes; the reference for the check is that fixed-point PyTorch model.
        mantissa_bits: grid resolution of the fixed-point form (None: 20 - 2 (T - 1)).

    Raises:
        ExportError: bad ``path`` / ``imgsz`` / ``opset``, onnx or onnxruntime missing.
    """
    _require("onnx")
    if int(opset) < 11:
        raise ExportError(f"opset {opset} has no Round operator; use opset >= 11 (default {DEFAULT_OPSET})")
    started = time.perf_counter()
    model = model.float().eval()
    _check_imgsz(model, imgsz)
    target = prepare_path(model, path, fixed_point, mantissa_bits)
    in_chs = model.in_chs
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _Detections(onnx_ready(target)).eval()
    example = torch.rand(1, in_chs, imgsz, imgsz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the fixed anchor grid and shapes
        torch.onnx.export(wrapper, (example,), str(file), dynamo=False, opset_version=int(opset),
                          input_names=["images"], output_names=["detections"],
                          dynamic_axes={"images": {0: "batch"}, "detections": {0: "batch"}})
    wrapper.eval()
    with torch.no_grad():
        out_shape = list(wrapper(example).shape)
    report = OnnxExportReport(file=str(file), path=path, opset=int(opset), input_shape=["batch", in_chs, imgsz, imgsz],
                              output_shape=["batch", *out_shape[1:]], fixed_point=bool(fixed_point))
    if fixed_point:
        bits = target.fixed_point["mantissa_bits"]
        report.notes.append(f"fixed-point form: power-of-two weight grids with {bits} mantissa bits, "
                            "input snapped to round(x * 255); compared with the same fixed-point model in PyTorch")
    if check:
        ort = _require("onnxruntime")
        images = check_images if check_images is not None else torch.rand(check_batch, in_chs, imgsz, imgsz)
        report.max_abs_diff, report.max_abs_diff_pixels = check_onnx(file, target, images)
        report.check_batch = int(images.shape[0])
        report.onnxruntime = ort.__version__
    report.seconds = time.perf_counter() - started
    return report
