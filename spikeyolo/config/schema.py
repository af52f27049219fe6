"""The schema of the packaged configs: what each key is, its type and its default, in one place.

Each command's config (configs/train.yaml, eval.yaml, ...) starts from its dataclass below (``defaults: [_<name>_schema,
...]``) and each typed config group's yaml from the group's (``defaults: [_schema]``); the yaml files keep only the
values that differ. OmegaConf then checks every value set on the command line or in a yaml against the declared
type (``trainer.epochs=abc`` is refused when the config is composed); :func:`spikeyolo.cli.common.check_command_line`
turns that into one line.

Typed: the seven commands and the groups ``trainer``, ``optim``, ``logger``, ``neuron`` and ``energy``. The
``data`` and ``model`` groups stay yaml-only: their keys differ per source (embedded, yolo, coco_json, gen1, a
registered one) and per model family (SpikeYOLO's layer list, Tiny YOLO's channels), so a group there is typed
``Any``; the struct flag still refuses unknown keys in them, and the constructors and data sources check values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

__all__ = ["TrainerConfig", "OptimConfig", "LoggerConfig", "WandbLoggerConfig", "NeuronConfig", "ILIFConfig",
           "EnergyConfig", "NmsConfig", "ImageSizeConfig", "TrainConfig", "EvalConfig", "EnergyAppConfig",
           "ExportConfig", "PredictConfig", "ConvertConfig", "SummaryConfig", "register_schemas"]

TIMESTAMP = "${now:%Y-%m-%d_%H-%M-%S}"


# --------------------------------------------------------------------------- config groups


@dataclass
class NmsConfig:
    """Non-maximum suppression of the decoded boxes (validation and spikeyolo-eval)."""

    conf: float = 0.001
    iou: float = 0.7
    max_det: int = 300


@dataclass
class LossGains:
    box: float = 7.5         # YOLOv8 loss of the anchor-free head (reference gains)
    cls: float = 0.5
    dfl: float = 1.5
    tal_topk: int = 10
    # the assigner's small-box rule: ultralytics >= 8.4 enlarges ground-truth sides under 16 px (the middle stride) to
    # 16 px when it picks candidate anchors, 8.0.197 (the reference's engine) does not. false: as the reference
    # (twelve boxes of 6-30 px: 48 positive anchors against 8.4's 60; a 4 px box gets none 2 times in 3,
    # tests/test_small_boxes.py); true: as ultralytics 8.4; null: by family, false for SpikeYOLO (the reference
    # recipe), true for model=yolov8*
    tal_small_box_floor: Optional[bool] = None
    anchor_box: float = 1.0  # YOLOv2-style loss of anchor-based heads (tiny_yolo, model.head=anchor_based)
    anchor_obj: float = 1.0
    anchor_cls: float = 1.0


@dataclass
class TrainerConfig:
    """``trainer``: the training loop (the reference recipe; experiments shorten it)."""

    epochs: int = 300
    batch_size: int = 40                 # over all processes, as the reference's batch (40 on 4 GPUs: 10 a GPU); each
                                         # of N torchrun processes takes batch_size / N (refused unless it divides)
    val_batch_size: Optional[int] = None  # null: 2 x the per-process batch (the reference's)
    workers: int = 4
    device: str = "auto"                 # auto | cpu | cuda | 0 | '0,1'
    amp: bool = True                     # mixed precision on CUDA (ignored on CPU)
    ema: bool = True
    ema_decay: float = 0.9999
    ema_tau: int = 2000
    val_interval: int = 1                # validate every N epochs (and always after the last)
    close_mosaic: Optional[int] = 10     # epochs without mosaic at the end; null: data.augment.close_mosaic
    patience: int = 100                  # early stop after N validations without improvement
    resume: bool = False                 # true: continue the run in run_dir from weights/last.pt
    max_minutes: Optional[float] = None  # a guard: stop after this wall time (the last epoch still validates) and say
                                         # what it cut; the schedule is trainer.epochs
    save_period: int = 0                 # also keep epoch{N}.pt every N epochs (0: only last/best)
    min_free_gb: float = 1.0             # refuse to start with less free space where run_dir is (0: no check)
    log_images: bool = True              # validation mosaic with predicted boxes
    progress: bool = True                # tqdm progress bars
    yardstick: Optional[str] = None      # printed after the final evaluation: what to compare its figure with
    loss: LossGains = field(default_factory=LossGains)
    nms: NmsConfig = field(default_factory=NmsConfig)


@dataclass
class OptimConfig:
    """``optim``: SGD recipe of the reference SpikeYOLO run (shared/reference/spikeyolo-training-and-eval.md §1)."""

    name: str = "sgd"                 # sgd (reference) | adamw
    lr0: float = 0.01
    lrf: float = 0.004                # final lr = lr0 * lrf (linear schedule)
    momentum: float = 0.937           # beta1 for adamw
    nesterov: bool = True
    weight_decay: float = 0.0005      # scaled by batch * accumulate / nominal_batch_size
    nominal_batch_size: int = 64      # gradients are accumulated up to this batch
    warmup_epochs: float = 10
    warmup_min_iters: int = 100
    warmup_bias_lr: float = 0.1
    warmup_momentum: float = 0.8
    cos_lr: bool = False
    grad_clip: float = 10.0           # max gradient norm (0 disables)


@dataclass
class LoggerConfig:
    """``logger``: the experiment dashboard (RUN_DIR/metrics.jsonl is written in any case)."""

    kind: str = MISSING    # csv | none | wandb (spikeyolo.engine.loggers.LOGGERS)


@dataclass
class WandbLoggerConfig(LoggerConfig):
    kind: str = "wandb"
    project: str = "spikeyolo"
    entity: Optional[str] = None
    mode: str = "offline"             # online streams to the dashboard (needs WANDB_API_KEY)
    tags: List[str] = field(default_factory=list)


@dataclass
class NeuronConfig:
    """``neuron``: the spiking neuron of every layer (``kind``: a name of spikeyolo.models.NEURONS)."""

    kind: str = MISSING    # ilif | relu
    time_steps: int = 1    # T
    max_level: int = 4     # D
    decay: float = 0.25
    charge: str = "ilif"   # ilif: H = decay*(H - S) + X (Eq. 11) | lif: the reference Gen1 LIF, H = V + (X - V)/tau


@dataclass
class ILIFConfig(NeuronConfig):
    kind: str = "ilif"
    backend: str = "fused"  # T > 1: fused | spikingjelly | loop (same numbers; fused is fastest)


@dataclass
class EnergyConfig:
    """``energy``: energy per operation in pJ (the numbers live in configs/energy/*.yaml only)."""

    name: str = MISSING
    e_mac_pj: float = MISSING
    e_ac_pj: float = MISSING


@dataclass
class ImageSizeConfig:
    """The ``data`` node of a command without a dataset: only the input size."""

    imgsz: Optional[int] = None   # square input size; null: the size the checkpoint was trained at


# --------------------------------------------------------------------------- the commands


@dataclass
class GroupsOfAModel:
    """The config groups a model is built and fed from (each typed by its own group)."""

    model: Any = MISSING
    neuron: Any = MISSING
    data: Any = MISSING


@dataclass
class TrainConfig(GroupsOfAModel):
    """spikeyolo-train (configs/train.yaml)."""

    optim: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    # what the run is: <model config>_<dataset> (data.name, else data.source); experiments name themselves
    name: str = "${oc.select:model.name,model}_${spikeyolo.coalesce:${data.name},${data.source}}"
    seed: int = 0
    # true as the reference (its default.yaml): deterministic cuDNN / cuBLAS kernels, so two GPU runs (and a resumed
    # one) agree; it costs some GPU speed (no cuDNN autotuning): false trades that for speed. CPU runs are exact anyway.
    deterministic: bool = True
    run_dir: str = "runs/${name}/" + TIMESTAMP


@dataclass
class ReferenceNeuron:
    time_steps: Optional[int] = None  # T
    max_level: Optional[int] = None   # D


@dataclass
class EvalConfig:
    """spikeyolo-eval (configs/eval.yaml)."""

    data: Any = MISSING
    energy: Any = MISSING
    model: Any = None                  # reference checkpoints only (model=spikeyolo_s); null: inferred from the weights
    checkpoint: Optional[str] = None   # a spikeyolo checkpoint (weights/best.pt) or a reference (BICLab) one
    neuron: ReferenceNeuron = field(default_factory=ReferenceNeuron)  # reference checkpoints only; null: theirs
    gt: Optional[str] = None           # COCO ground-truth json (scoring mode, with detections=)
    detections: Optional[str] = None   # COCO results json (scoring mode)
    deploy: str = "integer"            # a path of spikeyolo.deploy.DEPLOY_PATHS: integer | spike_driven | fixed_point
    backend: str = "pycocotools"       # pycocotools | faster (faster-coco-eval)
    protocol: str = "all"              # Gen1 data: all | spikeyolo | prophesee | cordone
    use_ema: bool = True
    dtype: str = "float32"             # float32 | float64 (the integer and spike-driven paths agree bit for bit)
    batch_size: int = 16
    workers: int = 0
    device: str = "auto"
    nms: NmsConfig = field(default_factory=NmsConfig)
    timesteps: Optional[List[int]] = None  # converted Spiking-YOLO only: mAP vs T, e.g. [16,64,256]
    save_json: bool = True             # write RUN_DIR/predictions.json (COCO results)
    run_dir: str = "runs/eval/" + TIMESTAMP


@dataclass
class EnergyAppConfig(GroupsOfAModel):
    """spikeyolo-energy (configs/energy.yaml)."""

    energy: Any = MISSING
    checkpoint: Optional[str] = None   # a spikeyolo checkpoint; null: the model/neuron groups at random init
    use_ema: bool = True
    num_images: int = 8                # validation images to run (batch 1)
    mode: str = "reference"            # reference (sheet: dense ops x mean spikes x T) | exact (1s x true fan-out)
    random_images: bool = False        # true: uniform random images of data.imgsz (flagged in energy.json)
    seed: int = 0
    plots: bool = True
    run_dir: str = "runs/energy/" + TIMESTAMP


@dataclass
class ExportConfig:
    """spikeyolo-export (configs/export.yaml)."""

    checkpoint: Optional[str] = None   # a spikeyolo or reference checkpoint (weights/best.pt)
    format: str = "onnx"               # onnx | nir
    path: Optional[str] = None         # integer | spike_driven; null: integer for onnx, spike_driven for nir
    data: ImageSizeConfig = field(default_factory=ImageSizeConfig)
    opset: int = 17                    # ONNX opset (>= 11 for Round)
    use_ema: bool = True
    fixed_point: bool = True           # power-of-two weight grids (the runtime's spikes = PyTorch's, bit for bit)
    mantissa_bits: Optional[int] = None  # fixed-point grid; null: 20 - 2 (T - 1)
    check: bool = True                 # onnx: run onnxruntime on random images and compare with PyTorch
    check_batch: int = 2
    atol: float = 1.0e-4
    nir_groups: str = "compatible"     # nir: compatible (every importer builds it) | exact (spikeyolo's nirtorch map) | dense
    nir_typed: bool = True             # nir: per-neuron arrays and dense convs that pass nir.read's type check (no
                                       # compact form can); false: the compact form (read with type_check=False)
    output: Optional[str] = None       # default RUN_DIR/model_<path>.onnx or RUN_DIR/model_spike_driven.nir
    run_dir: str = "runs/export/" + TIMESTAMP


@dataclass
class PredictConfig:
    """spikeyolo-predict (configs/predict.yaml)."""

    source: Optional[str] = None        # an image, a folder, a glob, a video, or an event recording (.dat .raw ...)
    checkpoint: Optional[str] = None    # trained on images (pictures, video) or on event data (.dat)
    events: Optional[str] = None        # an event recording (the same as source=REC; any format, read by content)
    deploy: str = "integer"             # integer | spike_driven | fixed_point (pictures and video)
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    batch_size: int = 16                # pictures per forward
    save_images: bool = True            # pictures: RUN_DIR/images/ with the boxes drawn; a video: RUN_DIR/<stem>.mp4
    save_txt: bool = False              # pictures: RUN_DIR/labels/<name>.txt (YOLO: class cx cy w h score)
    window_us: Optional[int] = None     # events per window; null: the checkpoint's data.window_us
    step_us: Optional[int] = None       # window hop; null: window_us
    start_us: Optional[int] = None      # end of the first window; null: window_us
    end_us: Optional[int] = None        # last window end at most; null: until the last event is covered
    carry_state: bool = False           # keep the membrane across windows
    representation: Optional[str] = None   # null: the checkpoint's data.representation
    data: ImageSizeConfig = field(default_factory=ImageSizeConfig)
    most_recent_first: Optional[bool] = None  # null: the checkpoint's data.most_recent_first
    use_ema: bool = True
    device: str = "auto"
    progress: bool = True               # a progress bar
    run_dir: Optional[str] = None       # where the outputs go; null: runs/predict/<date_time>
    out: Optional[str] = None           # deprecated: the old name of run_dir (removed in the next release)
    video: bool = False                 # events: also write RUN_DIR/detections.gif
    video_fps: float = 10
    video_max_frames: int = 300


@dataclass
class CalibrationConfig:
    images: int = 64       # training images used to compute lambda
    batch_size: int = 8
    split: str = "train"   # letterboxed to data.imgsz, no augmentation


@dataclass
class ConvertConfig:
    """spikeyolo-convert (configs/convert.yaml)."""

    data: Any = MISSING
    checkpoint: Optional[str] = None   # ANN checkpoint of a tiny_yolo model
    output: Optional[str] = None       # default <checkpoint stem>_snn_<norm>_<neuron>.pt beside it
    norm: str = "channel"              # channel (Eq. 5) | layer (Eq. 4)
    percentile: Optional[float] = None  # lambda percentile; null: 99.9 for channel, 100 for layer
    spiking_neuron: str = "ibt"        # a key of spiking_neurons
    timesteps: int = 500
    decoding: str = "vmem"             # vmem | spike
    time_chunk: int = 16
    device: str = "cpu"
    seed: int = 0
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    spiking_neurons: Dict[str, Any] = field(default_factory=dict)


@dataclass
class SummaryConfig:
    """spikeyolo-summary (configs/summary.yaml)."""

    model: Any = MISSING
    neuron: Any = MISSING
    data: ImageSizeConfig = field(default_factory=lambda: ImageSizeConfig(imgsz=640))


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore (the yaml files name them in their defaults lists)."""
    store = ConfigStore.instance()
    for name, node in (("train", TrainConfig), ("eval", EvalConfig), ("energy", EnergyAppConfig),
                       ("export", ExportConfig), ("predict", PredictConfig), ("convert", ConvertConfig),
                       ("summary", SummaryConfig)):
        store.store(name=f"_{name}_schema", node=node)
    for group, name, node in (("trainer", "_schema", TrainerConfig), ("optim", "_schema", OptimConfig),
                              ("logger", "_schema", LoggerConfig), ("logger", "_wandb_schema", WandbLoggerConfig),
                              ("neuron", "_schema", NeuronConfig), ("neuron", "_ilif_schema", ILIFConfig),
                              ("energy", "_schema", EnergyConfig)):
        store.store(group=group, name=name, node=node)


register_schemas()
