"""Trainer: the SpikeYOLO / YOLOv8 recipe (SGD, warmup, linear lr, EMA, AMP, DDP), resumable.

``Trainer(cfg).fit() -> metrics`` trains the configured model on the configured data,
validating the EMA weights every ``trainer.val_interval`` epochs and writing
RUN_DIR/weights/{last,best}.pt atomically after every epoch. ``trainer.resume=true``
continues from RUN_DIR/weights/last.pt at the next epoch with the same schedule, EMA,
optimizer, scaler, last optimizer step, RNG and loader state (every rank's under DDP), so a run
killed at any moment and resumed by a new process ends with the same weights as an uninterrupted
one, bit for bit on CPU (docs/reliability.md, "Exact resume"). ``model.weights=PATH`` starts from
the weights of a spikeyolo or reference checkpoint (fine-tuning; class layers re-initialised when
the class count differs). The step is the reference's (ultralytics 8.0.197; docs/architecture.md, "The training step
as the reference"): ``trainer.batch_size`` is the total over all processes, the schedule is :class:`Schedule`.
"""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from spikeyolo.config import model_config, resolve_imgsz, resolve_num_classes, resolve_time_steps
from spikeyolo.data import dataloader_from_config, get_source, maybe_close_mosaic, spec_from_config
from spikeyolo.engine import checkpoint as ckpt
from spikeyolo.engine.distributed import cleanup_distributed, init_distributed, rank_batch_size, select_device
from spikeyolo.engine.ema import ModelEMA
from spikeyolo.engine.loggers import MetricsFile
from spikeyolo.engine.optim import Schedule, build_optimizer
from spikeyolo.engine.validate import validate
from spikeyolo.errors import TrainingError
from spikeyolo.evaluation import flat_evaluators
from spikeyolo.losses import build_training_loss
from spikeyolo.models import build_model
from spikeyolo.structures import model_input
from spikeyolo._ultralytics.data import loader_state, restore_loader_state

log = logging.getLogger("spikeyolo.train")

__all__ = ["Trainer", "TrainingError", "fitness"]


def fitness(metrics: dict[str, float]) -> float:
    """Model selection score: 0.1 mAP50 + 0.9 mAP50:95 (ultralytics)."""
    return 0.1 * metrics.get("map50", 0.0) + 0.9 * metrics.get("map50_95", 0.0)


def _reporting_loader_errors(batches: Any, epoch: int) -> Any:
    """Yield from a data loader; a failed loader worker becomes a TrainingError naming the file where known.

    torch re-raises a worker's exception as "Caught X in DataLoader worker process N. Original Traceback
    ..."; its last line carries the message (ultralytics names the image it cannot read). A worker killed
    by a signal (out of memory, ...) has no file to name.
    """
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as err:
            if "DataLoader worker" not in str(err):
                raise
            lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
            detail = lines[-1] if lines[0].startswith("Caught ") else lines[0]
            raise TrainingError(f"data loading failed in epoch {epoch + 1}: {detail} (last good checkpoint kept; "
                                "resume with trainer.resume=true)") from err
        yield batch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (CPU and CUDA); ``deterministic``: also deterministic cuDNN / cuBLAS kernels
    (ops without a deterministic CUDA kernel only warn), as ultralytics' ``deterministic=True``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts (first matmul)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)


class Trainer:
    """Train a detector from a composed config (see configs/train.yaml).

    Args:
        cfg: the composed config (model, neuron, data, optim, trainer, logger, seed, run_dir).
        logger: an experiment logger (configs/logger); None: no dashboard.
    """

    def __init__(self, cfg: DictConfig, logger: Any = None) -> None:
        self.cfg = cfg
        self.tcfg = cfg.trainer
        self.dist = init_distributed(self.tcfg.device)
        self.device = select_device(self.tcfg.device, self.dist.local_rank, key="trainer.device")
        self.run_dir = Path(cfg.run_dir)
        self.weights_dir = self.run_dir / "weights"
        self.is_main = self.dist.is_main
        seed_everything(int(cfg.seed) + max(self.dist.rank, 0), bool(cfg.deterministic))

        self.spec = spec_from_config(cfg.data)
        num_classes = resolve_num_classes(cfg) if OmegaConf.select(cfg, "model.num_classes") else \
            self.spec.num_classes
        self.model_config = model_config(cfg, num_classes)
        weights = OmegaConf.select(cfg, "model.weights")  # a run option, not part of the network
        # a resumed run's model comes from its config.yaml (a file): checked as data, its size too
        source = str(self.run_dir / "config.yaml") if self.tcfg.resume else None
        self.model = build_model(self.model_config, source=source).to(self.device)
        if weights and not self.tcfg.resume:  # a resumed run continues from its own last.pt
            report = ckpt.init_from_weights(self.model, self.model_config, weights)
            if self.is_main:
                log.info(report)
        self.loss_fn = build_training_loss(self.model, OmegaConf.to_container(self.tcfg.loss, resolve=True))
        if hasattr(self.loss_fn, "to"):
            self.loss_fn.to(self.device)

        stride = max(self.model.strides)
        resolve_imgsz(cfg, self.model)   # data.imgsz, a multiple of the largest stride
        self.total_batch = int(self.tcfg.batch_size)   # over all processes, as the reference's batch
        batch_size = rank_batch_size(self.total_batch, self.dist.world_size)
        # event clips of the model's T, settled where every command settles it
        clips = {"time_steps": resolve_time_steps(cfg, self.model)} if get_source(self.spec.source).is_event_data \
            else {}
        self.train_loader = dataloader_from_config(self.spec, cfg.data, "train", batch_size,
                                                   int(self.tcfg.workers), rank=self.dist.rank, stride=stride,
                                                   device=self.device, **clips)
        self.val_loader = None
        if self.is_main:
            val_batch = int(self.tcfg.val_batch_size or 2 * batch_size)
            self.val_loader = dataloader_from_config(self.spec, cfg.data, "val", val_batch, int(self.tcfg.workers),
                                                     stride=stride, device=self.device, **clips)

        ocfg = cfg.optim
        self.accumulate = max(round(ocfg.nominal_batch_size / self.total_batch), 1)
        weight_decay = ocfg.weight_decay * self.total_batch * self.accumulate / ocfg.nominal_batch_size
        self.optimizer = build_optimizer(self.model, ocfg.lr0, ocfg.momentum, weight_decay, ocfg.nesterov,
                                         name=ocfg.name)
        self.epochs = int(self.tcfg.epochs)
        self.batches_per_epoch = len(self.train_loader)
        self.schedule = Schedule(
            epochs=self.epochs, batches_per_epoch=self.batches_per_epoch,
            warmup_iterations=max(round(ocfg.warmup_epochs * self.batches_per_epoch), int(ocfg.warmup_min_iters))
            if ocfg.warmup_epochs > 0 else -1,
            lrf=ocfg.lrf, cos_lr=bool(ocfg.cos_lr), nominal_batch=int(ocfg.nominal_batch_size),
            total_batch=self.total_batch, bias_lr=ocfg.warmup_bias_lr, start_momentum=ocfg.warmup_momentum,
            momentum=ocfg.momentum)
        self.last_step = -1   # the iteration of the last optimizer step, carried across epochs (as the reference)
        self.amp = bool(self.tcfg.amp) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.ema = ModelEMA(self.model, self.tcfg.ema_decay, self.tcfg.ema_tau) if self.tcfg.ema else None
        self.start_epoch = 0
        self._saved_rng: dict[str, Any] | None = None  # a resumed run's RNG states, restored by fit()
        self._rank_states: list[dict[str, Any] | None] | None = None  # DDP: every rank's RNG and loader state
        self.best_fitness = -1.0
        self.last_metrics: dict[str, float] = {}
        self.cut: str | None = None   # what trainer.max_minutes cut from the schedule (None: it ran as configured)
        self.epochs_without_improvement = 0
        self.logger = logger
        self.metrics_file = MetricsFile(self.run_dir)
        if self.tcfg.resume:
            self._resume()
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # ------------------------------------------------------------------ checkpoints

    def _payload(self, epoch: int) -> dict[str, Any]:
        return {
            "model_config": self.model_config,
            "model": {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                      for k, v in self.model.state_dict().items()},
            "ema": ({k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                     for k, v in self.ema.module.state_dict().items()} if self.ema else None),
            "ema_updates": self.ema.updates if self.ema else 0,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.amp else None,
            "epoch": epoch,
            "best_fitness": self.best_fitness,
            "epochs_without_improvement": self.epochs_without_improvement,
            "rng": ckpt.rng_state(),
            "loader": loader_state(self.train_loader),
            "ranks": self._rank_states,  # DDP: the other ranks' "rng" and "loader" (index = rank; 0: the above)
            "last_opt_step": self.last_step,   # carried across epochs, as the reference's last_opt_step
            "pending_grads": None,   # an epoch's leftover gradients are dropped (as the reference): none to carry
            "train_config": OmegaConf.to_yaml(self.cfg, resolve=True),
            "names": list(self.spec.names),
            "metrics": dict(self.last_metrics),
        }

    def _resume(self) -> None:
        path = self.weights_dir / "last.pt"
        if not path.is_file():
            raise TrainingError(f"trainer.resume=true but {path} does not exist (run_dir={self.run_dir})")
        payload = ckpt.read_checkpoint(path, map_location="cpu")
        ckpt.stored_model_config(payload, str(path))   # checked as data (names, ranges), though config.yaml builds
        ckpt.load_weights(self.model, {**payload, "ema": None}, source=str(path))
        if self.ema and payload.get("ema") is not None:
            self.ema.module.load_state_dict(payload["ema"])
            self.ema.updates = int(payload["ema_updates"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.amp and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.start_epoch = int(payload["epoch"]) + 1
        self.best_fitness = float(payload.get("best_fitness", -1.0))
        self.epochs_without_improvement = int(payload.get("epochs_without_improvement", 0))
        self.last_metrics = dict(payload.get("metrics") or {})
        self.last_step = int(payload["last_opt_step"]) if payload.get("last_opt_step") is not None else \
            self.schedule.last_step_before(self.start_epoch)
        own = payload
        if self.dist.rank > 0:
            ranks = payload.get("ranks") or []
            if len(ranks) == self.dist.world_size:
                own = ranks[self.dist.rank]
            else:
                log.warning("rank %d: %s holds no state for it (trained with another world size): its RNG and loader "
                            "continue from rank 0's", self.dist.rank, path)
        self._saved_rng = own.get("rng")  # put back when fit() starts: nothing built before may draw from it
        if own.get("loader") is not None:
            restore_loader_state(self.train_loader, own["loader"])
        if self.start_epoch >= self.epochs:
            raise TrainingError(f"{path} already finished {self.start_epoch} of {self.epochs} epochs; "
                                "raise trainer.epochs to train further")
        if self.is_main:
            self.metrics_file.keep_epochs(self.start_epoch)  # records written after the checkpoint are redone
        log.info("resuming %s from epoch %d", path, self.start_epoch)

    # ------------------------------------------------------------------ training

    def _set_epoch_lr(self, epoch: int) -> None:
        scale = self.schedule.epoch_lr_scale(epoch)   # the reference's scheduler steps after an epoch: lf(e - 1)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * scale

    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        if self.cfg.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema:
            self.ema.update(self.model)

    def train_epoch(self, epoch: int, deadline: float | None = None) -> dict[str, float]:
        """One epoch; returns mean loss terms, lr and throughput."""
        if maybe_close_mosaic(self.train_loader, epoch, self.epochs, self.cfg.data.augment.close_mosaic
                              if self.tcfg.close_mosaic is None else int(self.tcfg.close_mosaic)):
            log.info("epoch %d: mosaic closed", epoch)
        if self.train_loader.num_workers > 0 and hasattr(self.train_loader, "reset"):
            # fresh workers each epoch (ultralytics keeps them): seeded from the loader's generator, what they draw
            # (order, augmentation, mosaic partners) is then a function of state a checkpoint holds, so a resumed run
            # with workers is exact too; persistent ones would carry RNGs and a prefetch no checkpoint has
            self.train_loader.reset()
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        self.train_model.train()
        self._set_epoch_lr(epoch)
        self.optimizer.zero_grad(set_to_none=True)   # the reference drops an epoch's leftover gradients
        sums: dict[str, float] = {}
        images_seen = 0
        started = time.perf_counter()
        progress = self.train_loader
        bar = None
        if self.is_main and self.tcfg.progress:
            bar = progress = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False,
                                  dynamic_ncols=True)
        for index, batch in enumerate(_reporting_loader_errors(progress, epoch)):
            iteration = index + self.batches_per_epoch * epoch
            if self.schedule.in_warmup(iteration):
                self.schedule.warmup(self.optimizer, iteration, epoch)
            images = model_input(batch["img"], self.device)
            with torch.autocast(self.device.type, enabled=self.amp):
                maps = self.train_model(images)
                losses = self.loss_fn([m.float() for m in maps], batch)
            total = losses["total"] * (self.dist.world_size if self.dist.enabled else 1)
            if not torch.isfinite(total):
                terms = {k: float(v.detach()) for k, v in losses.items()}
                raise TrainingError(f"non-finite loss at epoch {epoch + 1}, batch {index}: {terms} "
                                    "(last good checkpoint kept)")
            self.scaler.scale(total).backward()
            if iteration - self.last_step >= self.schedule.accumulate_at(iteration):
                self._optimizer_step()
                self.last_step = iteration
            images_seen += batch["img"].shape[0]
            for name in ("box", "obj", "cls", "dfl"):  # obj: anchor-based heads
                if name in losses:
                    sums[name] = sums.get(name, 0.0) + float(losses[name].detach())
            if bar is not None:
                elapsed = time.perf_counter() - started
                bar.set_postfix({**{k: f"{v / (index + 1):.3f}" for k, v in sums.items()},
                                 "lr": f"{self.optimizer.param_groups[1]['lr']:.2e}",
                                 "img/s": f"{images_seen / max(elapsed, 1e-9):.1f}"})
            if deadline is not None and time.time() > deadline:
                break
        if bar is not None:
            bar.close()
        self.optimizer.zero_grad(set_to_none=True)   # what no step took is dropped
        elapsed = time.perf_counter() - started
        count = max(index + 1, 1)
        stats = {f"train/{k}": v / count for k, v in sums.items()}
        if count < len(self.train_loader):
            stats["train/cut_short"] = 1.0   # trainer.max_minutes ended this epoch before its last batch
        stats.update({f"lr/pg{i}": g["lr"] for i, g in enumerate(self.optimizer.param_groups)})
        stats["train/images_per_s"] = images_seen * self.dist.world_size / max(elapsed, 1e-9)
        return stats

    def _gather_rank_states(self) -> list[dict[str, Any] | None]:
        """Every rank's RNG and loader state after an epoch (all ranks call it); rank 0's entry is None (its own is
        taken when the checkpoint is written, after validation)."""
        states: list[Any] = [None] * self.dist.world_size
        state = None if self.is_main else {"rng": ckpt.rng_state(), "loader": loader_state(self.train_loader)}
        torch.distributed.all_gather_object(states, state)
        return states

    def _save(self, epoch: int, name: str) -> Path:
        return ckpt.save_checkpoint(self._payload(epoch), self.weights_dir / name)

    def validate(self) -> dict[str, float]:
        """Score the EMA weights by the data config's evaluators whose metrics are scalars (the Gen1 protocols,
        a dict each, are spikeyolo-eval's)."""
        model = self.ema.module if self.ema else self.model
        nms = self.tcfg.nms
        result = validate(model, self.val_loader, self.spec, self.device, nms.conf, nms.iou, nms.max_det,
                          amp=self.amp, evaluators=flat_evaluators(self.cfg.data.evaluators))
        self.last_result = result
        return result.metrics

    def fit(self) -> dict[str, float]:
        """Train for the configured epochs (or until max_minutes / patience); returns the final metrics."""
        if self.is_main:
            self.weights_dir.mkdir(parents=True, exist_ok=True)
        if self._saved_rng is not None:
            ckpt.set_rng_state(self._saved_rng)
            self._saved_rng = None
        started = time.time()
        deadline = started + 60 * float(self.tcfg.max_minutes) if self.tcfg.max_minutes else None
        epoch = self.start_epoch
        for epoch in range(self.start_epoch, self.epochs):
            stats = self.train_epoch(epoch, deadline)
            if self.dist.enabled:
                self._rank_states = self._gather_rank_states()
            out_of_time = deadline is not None and time.time() > deadline
            final = epoch == self.epochs - 1 or out_of_time
            if self.is_main:
                record: dict[str, Any] = {"epoch": epoch + 1, **stats}
                improved = False
                if (epoch + 1) % int(self.tcfg.val_interval) == 0 or final:
                    metrics = self.validate()
                    self.last_metrics = metrics
                    record.update({f"metrics/{k}": v for k, v in metrics.items()})
                    score = fitness(metrics)
                    improved = score > self.best_fitness
                    self.epochs_without_improvement = 0 if improved else self.epochs_without_improvement + 1
                    if improved:
                        self.best_fitness = score
                    final = final or self.epochs_without_improvement >= int(self.tcfg.patience)
                record["time/elapsed_s"] = time.time() - started
                # last.pt, what a resume continues from, comes last: a kill before it redoes this epoch (exactly),
                # and the resume drops this epoch's record and rewrites best.pt alike
                self.metrics_file.write(record)
                if self.logger is not None:
                    self.logger.log_metrics(record, step=epoch + 1)
                if improved:
                    self._save(epoch, "best.pt")
                if self.tcfg.save_period and (epoch + 1) % int(self.tcfg.save_period) == 0:
                    self._save(epoch, f"epoch{epoch + 1}.pt")
                self._save(epoch, "last.pt")
                self._log_epoch(record)
            if self.dist.enabled:
                flag = torch.tensor([1.0 if final else 0.0], device=self.device)
                torch.distributed.broadcast(flag, 0)
                final = bool(flag.item())
            if final:
                if out_of_time and (epoch < self.epochs - 1 or stats.get("train/cut_short")):
                    self.cut = (f"trainer.max_minutes={self.tcfg.max_minutes:g} stopped the run after epoch "
                                f"{epoch + 1} of {self.epochs}{' (cut short)' if stats.get('train/cut_short') else ''}:"
                                f" the schedule was not completed, so its result is not the configured run's "
                                f"(trainer.max_minutes=null lifts the cap; trainer.resume=true run_dir={self.run_dir} "
                                f"continues)")
                    if self.is_main:
                        log.warning(self.cut)
                break
        cleanup_distributed(self.dist)
        return dict(self.last_metrics)

    def _log_epoch(self, record: dict[str, Any]) -> None:
        parts = [f"epoch {record['epoch']}/{self.epochs}"]
        parts += [f"{k.split('/')[1]} {record[k]:.3f}" for k in ("train/box", "train/obj", "train/cls", "train/dfl")
                  if k in record]
        if "metrics/map50" in record:
            parts += [f"mAP50 {record['metrics/map50']:.4f}", f"mAP50-95 {record['metrics/map50_95']:.4f}"]
        parts.append(f"{record.get('train/images_per_s', 0):.1f} img/s")
        log.info("  ".join(parts))
