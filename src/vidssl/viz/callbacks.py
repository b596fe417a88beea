"""Pictures a training run writes as it goes, given to the engine as callbacks by `vidssl pretrain`."""

from __future__ import annotations

import torch

from vidssl.engine.callbacks import Callback
from vidssl.engine.run_log import METRICS_NAME


class TracksPictures(Callback):
    """Every `every` epochs, the objects the teacher tracks through one fixed clip of the training
    data: `tracks/epoch_XXXX.png` and `.gif` in the run dir. `track_clip_picture` draws the heads with
    a fixed seed, so successive epochs compare and the global RNG is untouched (resume stays exact)."""

    def __init__(self, every: int = 1) -> None:
        self.every = every

    @torch.no_grad()
    def on_epoch_end(self, trainer) -> None:
        if self.every < 1 or trainer.epoch % self.every:
            return
        from vidssl.viz.tracks import object_overlay, save_tracks_png, track_clip_picture, write_clip_video

        cfg, epoch = trainer.cfg, trainer.epoch
        m = cfg.method
        clip = trainer.data.read_clip(trainer.data.num_clips // 2)
        frames, masks, tracks = track_clip_picture(  # heads: its fixed draw, the same every epoch
            trainer.method.teacher["backbone"], clip, cfg.aug.global_crop_size, m.num_objects, m.sinkhorn_iters,
            m.sinkhorn_eps, m.mask_threshold, m.track_features,
        )
        out = trainer.run_dir / "tracks"
        title = f"epoch {epoch}: {m.num_objects} objects tracked by the teacher (heads {tracks.heads.tolist()})"
        save_tracks_png(out / f"epoch_{epoch:04d}.png", frames, masks, title)
        write_clip_video(out / f"epoch_{epoch:04d}.gif", object_overlay(frames, masks))


class LossCurve(Callback):
    """At the end of a run: `loss.png`, the loss and learning rate against the step."""

    def on_fit_end(self, trainer) -> None:
        from vidssl.viz.plots import plot_loss_curve

        metrics = trainer.run_dir / METRICS_NAME
        if metrics.is_file() and metrics.stat().st_size:
            plot_loss_curve(metrics, trainer.run_dir / "loss.png")


def training_pictures(cfg) -> list[Callback]:
    """The pictures `vidssl pretrain` draws for a run of `cfg`."""
    callbacks: list[Callback] = [LossCurve()]
    if cfg.method.name == "dora" and cfg.method.track_pictures_every > 0:
        callbacks.insert(0, TracksPictures(cfg.method.track_pictures_every))
    return callbacks
