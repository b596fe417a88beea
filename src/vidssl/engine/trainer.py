"""The training loop, the same for every method, on Lightning Fabric (CPU, GPU, DDP, SLURM)."""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.fabric import Fabric

from vidssl.config import RUN_CONFIG_NAME, Config, EngineConfig, to_dict, to_yaml
from vidssl.data import build_training_data
from vidssl.data.errors import DecodeLimitError
from vidssl.engine import checkpoint as ckpt
from vidssl.engine.callbacks import Callback
from vidssl.engine.optim import clip_gradients_per_tensor, ema_update, param_groups
from vidssl.engine.run_log import RunLog
from vidssl.engine.schedules import CosineSchedule
from vidssl.errors import VidsslError
from vidssl.io import ensure_dir, remove_stale_temporaries, write_text
from vidssl.methods import Method, StepInfo, build_method
from vidssl.methods.diagnostics import CollapseWatch


class NonFiniteLoss(VidsslError):
    """The loss became NaN or infinite; the run stops before touching the weights."""


def cpu_has_amx() -> bool:
    """AMX tiles (Intel Sapphire Rapids and later): the CPUs where bf16 autocast trains faster than
    fp32. Without AMX it is slower: emulated on AVX2 (16x slower), and 1.4-1.7x slower even with
    AVX512-BF16 for vidssl's steps (docs/engine.md)."""
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def resolve_precision(precision: str | None, accelerator: str) -> str:
    """The configured precision, else: bf16 autocast on GPUs that support it (fp16 with a scaler on
    older ones), bf16 on CPUs with AMX, fp32 on other CPUs (docs/engine.md)."""
    if precision is not None:
        return precision
    if accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_amx() else "32-true"


def make_fabric(e: EngineConfig) -> tuple[Fabric, str]:
    """A launched Fabric for `e` (accelerator, devices, nodes, strategy) and its precision, chosen as
    pretraining chooses it: the public hook for other training loops on this engine (SeCAt)."""
    # Fabric announces its precision plugin on stderr; our start line says the same.
    for name in ("lightning.fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    precision = resolve_precision(e.precision, e.accelerator)
    fabric = Fabric(accelerator=e.accelerator, devices=e.devices, num_nodes=e.num_nodes, strategy=e.strategy,
                    precision=precision)
    fabric.launch()
    return fabric, precision


@dataclass
class Schedules:
    lr: CosineSchedule
    weight_decay: CosineSchedule
    momentum: CosineSchedule

    @classmethod
    def from_config(cls, config: Config, steps_per_epoch: int, total_batch: int) -> "Schedules":
        o = config.optim
        total = o.epochs * steps_per_epoch
        peak_lr = o.lr * total_batch / 256.0  # linear scaling rule
        return cls(
            lr=CosineSchedule(peak_lr, o.min_lr, total, warmup_steps=o.warmup_epochs * steps_per_epoch),
            weight_decay=CosineSchedule(o.weight_decay, o.weight_decay_end, total),
            momentum=CosineSchedule(o.momentum_teacher, 1.0, total),
        )


class GracefulStop:
    """First SIGINT/SIGTERM asks the loop to checkpoint and stop at the end of the step
    (SLURM sends SIGTERM before a pre-emption); a second SIGINT stops at once."""

    def __init__(self) -> None:
        self.signal: int | None = None  # the first signal received
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "GracefulStop":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class Trainer:
    """`callbacks` run on rank 0 at each epoch's end and once at the end of `fit` (pictures, plots);
    the other ranks wait for them."""

    def __init__(self, cfg: Config, run_dir: Path, resume: bool = False, callbacks: Sequence[Callback] = ()) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.callbacks = list(callbacks)
        self.fabric, self.precision = make_fabric(cfg.engine)
        self.resume_payload = self._prepare_run_dir(resume)

    # ------------------------------------------------------------------ setup
    def _prepare_run_dir(self, resume: bool) -> dict[str, Any] | None:
        path = self.run_dir / ckpt.CHECKPOINT_NAME
        if resume:
            if not path.is_file():
                raise VidsslError(f"--resume: no checkpoint in {self.run_dir} (expected {path})")
            if self.fabric.is_global_zero:  # a run killed while writing its checkpoint left this
                remove_stale_temporaries(path)
            return ckpt.load(path)
        if path.exists():
            raise VidsslError(f"{self.run_dir} already holds a run ({path.name}); pass --resume to continue it or choose another --out")
        if self.fabric.is_global_zero:
            ensure_dir(self.run_dir)
            write_text(self.run_dir / RUN_CONFIG_NAME, to_yaml(self.cfg))
        return None

    def _build(self) -> None:
        cfg, fabric = self.cfg, self.fabric
        # Same seed on every rank so the student (and its teacher copy) start identical everywhere.
        torch.manual_seed(cfg.engine.seed)
        if cfg.engine.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        method = build_method(cfg)
        self.data = build_training_data(
            cfg.data, method.make_loader_transform(), seed=cfg.engine.seed, rank=fabric.global_rank, world_size=fabric.world_size,
        )
        available = self.data.batches_per_epoch(cfg.data.batch_size)
        if available < 1:
            raise VidsslError(
                f"not enough clips for one batch per process: {self.data.num_clips} clips, "
                f"batch {cfg.data.batch_size} x {fabric.world_size} processes ({self.data.describe()})"
            )
        spe = cfg.optim.steps_per_epoch or available
        self.capped = cfg.optim.cap_steps_per_epoch and spe > available
        if self.capped:
            spe = available
        elif spe > available:
            raise VidsslError(
                f"optim.steps_per_epoch={spe} but one pass over the data gives {available} batches per process: "
                f"set optim.steps_per_epoch={available} or less (or optim.cap_steps_per_epoch=true)"
            )
        self.steps_per_epoch = spe
        self.total_steps = cfg.optim.epochs * spe
        per_clip = cfg.data.frames_per_clip if cfg.optim.lr_scale_by == "frames" else 1
        self.schedules = Schedules.from_config(cfg, spe, cfg.data.batch_size * fabric.world_size * per_clip)
        if fabric.world_size > 1 and fabric.device.type != "cpu":
            # batch statistics over all ranks, as DINO's code does; torch has no SyncBatchNorm on the CPU
            method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
        # a method may scale the lr per parameter (TimeT: backbone 1/10 of the head)
        optimizer = torch.optim.AdamW(param_groups(method.student, method.lr_scale), lr=0.0)
        self.method: Method = method
        self.model, self.optimizer = fabric.setup(method, optimizer)
        # Different augment/drop-path randomness per rank from here on.
        torch.manual_seed(cfg.engine.seed + 1000 * fabric.global_rank + 1)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.decode_errors = 0
        self._last_decode_error = ""  # this rank's latest skipped clip, for the stop message
        if self.resume_payload is not None:
            self._restore(self.resume_payload)

    def _restore(self, payload: dict[str, Any]) -> None:
        m = self.method
        m.student.load_state_dict(payload["student"])
        m.teacher.load_state_dict(payload["teacher"])
        extra = payload.get("method_state", {})
        if extra:
            m.load_state_dict({**m.state_dict(), **extra})
        self.optimizer.load_state_dict(payload["optimizer"])
        self.step = payload["step"]
        self.epoch = payload["epoch"]
        self.batch_in_epoch = payload["batch_in_epoch"]
        self.decode_errors = payload.get("decode_errors", 0)
        if payload.get("world_size") != self.fabric.world_size:
            self.fabric.print(
                f"warning: resuming a run of {payload.get('world_size')} processes on {self.fabric.world_size}: "
                "the data order from here differs from an uninterrupted run"
            )
        rngs = payload.get("rng_per_rank") or [payload["rng"]]  # "rng": rank 0's, in older checkpoints
        if len(rngs) == self.fabric.world_size:
            ckpt.set_rng_state(rngs[self.fabric.global_rank])
        elif self.fabric.global_rank == 0:
            ckpt.set_rng_state(rngs[0])
        if payload.get("precision"):  # the fp16 GradScaler's scale and growth tracker
            self.fabric.strategy.precision.load_state_dict(payload["precision"])

    # ------------------------------------------------------------------ checkpoint
    def _rng_states_of_all_ranks(self) -> list[dict[str, Any]]:
        """Every rank's RNG states (drop path, head choice and augmentation draw from them), so a
        resumed multi-process run replays each rank's streams, not rank 0's everywhere."""
        state = ckpt.rng_state()
        if self.fabric.world_size == 1:
            return [state]
        import torch.distributed as dist

        states: list[Any] = [None] * self.fabric.world_size
        dist.all_gather_object(states, state)
        return states

    def save_checkpoint(self) -> None:
        m = self.method
        rngs = self._rng_states_of_all_ranks()  # a collective: every rank, before rank 0 writes
        if self.fabric.is_global_zero:
            payload = {
                "format": ckpt.FORMAT,
                "config": to_dict(self.cfg),
                "student": m.student.state_dict(),
                "teacher": m.teacher.state_dict(),
                "method_state": {k: v for k, v in m.state_dict().items() if not k.startswith(("student.", "teacher."))},
                "optimizer": self.optimizer.state_dict(),
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "decode_errors": self.decode_errors,
                "world_size": self.fabric.world_size,
                "rng_per_rank": rngs,
                "precision": self.fabric.strategy.precision.state_dict(),
            }
            ckpt.save_atomic(payload, self.run_dir / ckpt.CHECKPOINT_NAME)
        self.fabric.barrier()

    # ------------------------------------------------------------------ loop
    def _apply_schedules(self) -> dict[str, float]:
        lr = self.schedules.lr(self.step)
        wd = self.schedules.weight_decay(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr
            group["weight_decay"] = wd if group["apply_wd"] else 0.0
        return {"lr": lr, "weight_decay": wd}

    def _train_step(self, views: list[torch.Tensor]) -> dict[str, Any]:
        cfg, fabric = self.cfg, self.fabric
        info = StepInfo(self.step, self.epoch, self.steps_per_epoch, self.total_steps)
        values = self._apply_schedules()
        loss, logs = self.model(views, info)
        finite = torch.isfinite(loss.detach()).float()
        if fabric.world_size > 1:
            finite = fabric.all_reduce(finite, reduce_op="min")
        if finite.item() < 1:
            where = "" if not (self.run_dir / ckpt.CHECKPOINT_NAME).exists() else f"; the last good checkpoint is {self.run_dir / ckpt.CHECKPOINT_NAME}"
            raise NonFiniteLoss(f"loss is {loss.item()} at step {self.step} (epoch {self.epoch}); stopping{where}")
        self.optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        if cfg.optim.clip_grad > 0:
            unscale = getattr(fabric.strategy.precision, "unscale_gradients", None)
            if unscale is not None:  # fp16 scaling: clip the real gradients
                unscale(self.optimizer.optimizer)
            values["grad_norm_max"] = clip_gradients_per_tensor(self.method.student, cfg.optim.clip_grad)
        if self.epoch < cfg.optim.freeze_last_layer:
            self.method.cancel_last_layer_gradients()
        scaler = getattr(fabric.strategy.precision, "scaler", None)
        scale_before = scaler.get_scale() if scaler is not None else None
        self.optimizer.step()
        momentum = self.schedules.momentum(self.step)
        if scaler is not None and scaler.get_scale() < scale_before:
            values["skipped_by_scaler"] = 1.0  # inf/NaN gradients: no update, so no EMA either
        else:
            ema_update(self.method.teacher, self.method.student, momentum,
                       only_trainable=self.method.ema_only_trainable)
        self.method.after_optimizer_step()
        values.update(loss=loss.item(), momentum=momentum, **logs)
        return values

    def _warn_if_upsampling(self, say) -> None:
        """Once, at the start: the method's first crop enlarging its source frames by more than
        1.5x on average means the frames are decoded too small for the recipe."""
        crop = getattr(self.data.transform, "source_crop", None)
        if crop is None or not self.data.frame_sizes:
            return
        factor = sum(crop.mean_upsampling(h, w) for w, h in self.data.frame_sizes) / len(self.data.frame_sizes)
        if factor > 1.5:
            w, h = self.data.frame_sizes[0]
            say(f"warning: the {crop.size} px crop enlarges the decoded frames ({w}x{h}) {factor:.1f}x on average; "
                "decode larger (data.video_short_side, or ingest --short-side) or lower the crop size")

    def _run_callbacks(self, hook: str) -> None:
        """Rank 0 runs `hook` of every callback with the method in eval mode; the others wait."""
        if self.callbacks and self.fabric.is_global_zero:
            self.method.eval()
            for callback in self.callbacks:
                getattr(callback, hook)(self)
            self.method.train()
        self.fabric.barrier()

    def fit(self, max_steps: int | None = None, max_seconds: float | None = None) -> dict[str, Any]:
        """Train to the end of the schedule, or to `max_steps` (default `engine.max_steps`) in total,
        or for `max_seconds` of this call. Stopped by SIGINT/SIGTERM, it checkpoints and returns the
        signal's number as `signal`."""
        self._build()
        cfg, fabric = self.cfg, self.fabric
        max_steps = cfg.engine.max_steps if max_steps is None else max_steps
        end_step = self.total_steps if max_steps is None else min(self.total_steps, max_steps)
        if self.step >= end_step:
            fabric.print(f"nothing to do: the run is at step {self.step} of {end_step}")
            return {"step": self.step}
        log = RunLog(self.run_dir, self.step, end_step, cfg.engine.progress) if fabric.is_global_zero else None
        if log:
            log.message(
                f"vidssl pretrain: {cfg.method.name} {cfg.model.arch}/{cfg.model.patch_size} on {self.data.describe()}; "
                f"{fabric.world_size} process(es) on {fabric.device}, precision {self.precision}; "
                f"{self.steps_per_epoch} steps/epoch{' (capped at one pass over the data)' if self.capped else ''} "
                f"x {cfg.optim.epochs} epochs; run dir {self.run_dir}"
            )
            self._warn_if_upsampling(log.message)
        clips_per_step = cfg.data.batch_size * fabric.world_size
        # Every run starts near uniform: judge collapse only once the lr warm-up is over.
        grace = max(10, cfg.optim.warmup_epochs * self.steps_per_epoch)
        watch = CollapseWatch(cfg.model.out_dim, grace, log.message) if log else None
        last: dict[str, Any] = {}
        started = time.perf_counter()
        step_start = started
        stopped_by_signal = False
        self.method.train()
        with GracefulStop() as stop:
            while self.step < end_step and not stopped_by_signal:
                batches = self.data.loader(cfg.data.batch_size, cfg.data.num_workers, self.epoch, self.batch_in_epoch)
                for batch in batches:
                    if self.batch_in_epoch >= self.steps_per_epoch or self.step >= end_step:
                        break
                    self.batch_in_epoch += 1
                    if self._count_decode_errors(batch["skipped"], empty=len(batch["video"]) == 0):
                        continue  # no clip left in some rank's batch: every rank skips this step
                    arrived = time.perf_counter()  # since step_start: waiting for the loader
                    # to the device; under aug.device=accelerator the method makes the views there
                    views = self.method.views_on_device(batch["views"], fabric.to_device)
                    values = self._train_step(views)
                    self.step += 1
                    now = time.perf_counter()
                    values["clips_per_s"] = clips_per_step / max(now - step_start, 1e-9)
                    values["step_s"] = now - step_start
                    values["data_wait_s"] = arrived - step_start
                    step_start = now
                    last = values
                    if log:
                        log.step(self.step, values, _bar_values(values))
                        if self.step % cfg.engine.log_every == 0 or self.step == end_step:
                            log.write(self.step, {"epoch": self.epoch, **values})
                            watch(self.step, values)
                    if self.step % cfg.engine.checkpoint_every == 0:
                        self.save_checkpoint()
                    if stop.requested:
                        stopped_by_signal = True
                        break
                    if max_seconds is not None and now - started > max_seconds:
                        end_step = self.step  # a time budget: stop here, as if it were the last step
                else:
                    self.batch_in_epoch = self.steps_per_epoch
                if self.batch_in_epoch >= self.steps_per_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    self._run_callbacks("on_epoch_end")
        self.save_checkpoint()
        wall = time.perf_counter() - started
        if log:
            log.close()
        self._run_callbacks("on_fit_end")
        if log:
            if stopped_by_signal:
                print(f"stopped at step {self.step}; checkpoint saved; resume with: vidssl pretrain --out {self.run_dir} --resume")
            else:
                loss = last.get("loss", math.nan)
                print(f"done: step {self.step}/{self.total_steps}, final loss {loss:.4f}, {wall:.1f} s, run dir {self.run_dir}")
        # finished: this process logged steps and was not stopped by a signal (rank 0 reports)
        return {"step": self.step, "loss": last.get("loss"), "wall_time_s": wall, "signal": stop.signal,
                "finished": bool(log) and bool(last) and not stopped_by_signal}

    def _count_decode_errors(self, skipped: list[str], empty: bool = False) -> bool:
        """Add this batch's skipped clips to the run-wide count (kept in the checkpoint) and stop
        past data.max_decode_errors; return True if the batch of some rank has no clip left
        (`empty`), so that every rank skips the step. Under several processes both are summed
        over all ranks at every batch, so every rank holds the same count and decides the same
        way at the same batch: a rank raising or skipping alone would leave the others waiting
        in a collective (or pair their collectives wrongly)."""
        new, empties = len(skipped), int(empty)
        if skipped:
            self._last_decode_error = skipped[-1]
        if self.fabric.world_size > 1:  # every rank calls this once per batch, errors or not
            total = self.fabric.all_reduce(torch.tensor([float(new), float(empties)], device=self.fabric.device),
                                           reduce_op="sum")
            new, empties = (int(x) for x in total.tolist())
        self.decode_errors += new
        if self.decode_errors > self.cfg.data.max_decode_errors:
            last = self._last_decode_error or "on another process (see its message)"
            raise DecodeLimitError(
                f"{self.decode_errors} clips failed to decode (limit data.max_decode_errors="
                f"{self.cfg.data.max_decode_errors}); last: {last}"
            )
        return empties > 0


def _bar_values(values: dict[str, Any]) -> dict[str, str]:
    """The progress bar's short form: loss, lr, speed, and the teacher's two entropies (H / H(mean))."""
    bar = {"loss": f"{values['loss']:.4f}", "lr": f"{values['lr']:.2e}", "clips/s": f"{values['clips_per_s']:.1f}"}
    if "teacher_entropy" in values:
        bar["H"] = f"{values['teacher_entropy']:.2f}/{values['teacher_batch_entropy']:.2f}"
    if "mask_iou" in values:
        bar["IoU"] = f"{values['mask_iou']:.2f}"
    return bar


def pretrain(
    cfg: Config, run_dir: Path, resume: bool = False, max_steps: int | None = None, callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    return Trainer(cfg, run_dir, resume=resume, callbacks=callbacks).fit(max_steps=max_steps)
