"""Train any task of the toolkit: `python training.py --config FILE [--opts key=value ...]`.

Runs as one process or under `torchrun --nproc_per_node N [--nnodes M]`. The loop is the same for every
task; a task differs only in its model's `forward(batch) -> {'loss': ...}` and `decode`. Relaunching the
same command resumes from the newest valid checkpoint in `training.model_dir/ckpts/`.
"""
from __future__ import annotations

import contextlib
import logging
import random
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from dataset import build_dataset
from dataset.loader import TrainBatchSampler, make_loader, seed_of
from modelling import build_model
from utils import checkpoint as ckpt
from utils.cli import base_parser, run_main
from utils.config import LOWER_IS_BETTER, load_config, save_config
from utils.distributed import DistInfo, all_reduce_sum, broadcast_object, gather_objects, init_distributed, shutdown
from utils.errors import CheckpointError, DataError, UserError
from utils.evaluation import autocast, evaluate, move_to
from utils.logging import Progress, gpu_memory_gb, setup_logging
from utils.optim import build_ema, build_optimizer, build_scheduler

log = logging.getLogger("training")


def main(argv: Sequence[str] | None = None) -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = load_config(args.config, args.opts)
    dist = init_distributed()
    try:
        train(cfg, dist)
    finally:
        shutdown()


def train(cfg: dict[str, Any], dist: DistInfo) -> dict[str, Any]:
    """Train to `training.total_epoch`; returns the final training state (step, best metric, ...)."""
    return TrainingRun(cfg, dist).fit()


class TrainingRun:
    """One run: model, optimisation state and counters, built from the config or a checkpoint."""

    def __init__(self, cfg: dict[str, Any], dist: DistInfo) -> None:
        self.cfg, self.dist, self.tcfg = cfg, dist, cfg["training"]
        tcfg = self.tcfg
        self.model_dir = Path(tcfg["model_dir"])
        self.ckpt_dir = self.model_dir / "ckpts"
        setup_logging(self.model_dir, dist.is_main)
        if dist.is_main:
            save_config(cfg, self.model_dir / "config.yaml")
        seed_everything(tcfg["random_seed"] + dist.rank)

        self.train_set = build_dataset(cfg, "train", train=True)
        self.vocab = self.train_set.vocab
        self.dev_set = build_dataset(cfg, "dev", vocab=self.vocab)
        self.model = build_model(cfg, self.vocab).to(dist.device)
        if tcfg["sync_bn"] and dist.is_distributed:
            if dist.device.type != "cuda":
                raise UserError("training.sync_bn: torch's SyncBatchNorm runs on GPUs only; set it to false on CPUs")
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.accumulation = tcfg["gradient_accumulation"]
        self.sampler = TrainBatchSampler(
            self.train_set.num_frames, tcfg["batch_size"], dist.rank, dist.world_size, tcfg["random_seed"],
            shuffle=tcfg["shuffle"], bucket=tcfg["length_bucketing"], multiple_of=self.accumulation,
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch // self.accumulation
        self.total_steps = self.steps_per_epoch * tcfg["total_epoch"]
        # What must not change when a run resumes: it fixes the data order and the schedule.
        self.layout = {"global_batch": tcfg["batch_size"] * dist.world_size, "gradient_accumulation": self.accumulation,
                       "train_samples": len(self.train_set), "steps_per_epoch": self.steps_per_epoch}
        opt_cfg = tcfg["optimization"]
        self.optimizer = build_optimizer(self.model, opt_cfg)
        self.scheduler = build_scheduler(self.optimizer, opt_cfg, self.total_steps, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=dist.device.type == "cuda" and tcfg["amp"] == "fp16")
        self.ema = build_ema(self.model, tcfg["ema"]["decay"]) if tcfg["ema"]["enabled"] else None
        self.state = {"step": 0, "epoch": 0, "best": None, "skipped_steps": 0, "skipped_samples": 0,
                      "nonfinite_run": 0, "infeasible_samples": 0}

        resumed = self.resume()
        log.info(
            "task %s: %d train / %d dev samples, %d processes x batch %d x accumulation %d, "
            "%d steps per epoch, %d steps in all, %.2fM parameters%s",
            cfg["task"], len(self.train_set), len(self.dev_set), dist.world_size, tcfg["batch_size"],
            self.accumulation, self.steps_per_epoch, self.total_steps,
            sum(p.numel() for p in self.model.parameters()) / 1e6,
            f", resumed from {resumed} at step {self.state['step']}" if resumed else "",
        )
        self.ddp_model = self.model
        if dist.is_distributed:
            device_ids = [dist.device.index] if dist.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(self.model, device_ids=device_ids)
        self.writer = _tensorboard(self.model_dir, self.state["step"]) if dist.is_main else None
        self.progress = Progress(self.total_steps, self.state["step"], enabled=dist.is_main)
        self.metric_name = tcfg["validation"]["metric"]
        self.step_ok = True
        self._reset_window()

    def fit(self) -> dict[str, Any]:
        state = self.state
        while state["step"] < self.total_steps:
            epoch = state["epoch"] = state["step"] // self.steps_per_epoch
            self.sampler.set_epoch(epoch, start_batch=(state["step"] % self.steps_per_epoch) * self.accumulation)
            self.train_set.set_epoch(epoch)
            seed = seed_of(self.tcfg["random_seed"], epoch, self.dist.rank)
            loader = make_loader(self.train_set, self.sampler, self.tcfg["num_workers"], seed)
            self.model.train()
            self.step_ok, self.epoch_counts = True, {"skipped": 0, "infeasible": 0}
            for micro, batch in enumerate(loader, start=1):
                last_micro = micro % self.accumulation == 0
                self.micro_step(batch, last_micro)
                if last_micro and self.finish_step():
                    break
            self._report_epoch(epoch)
        self.progress.close()
        if self.writer is not None:
            self.writer.close()
        log.info("done: %d steps, best dev %s %.3f, %d steps skipped, %d samples skipped; checkpoints in %s",
                 state["step"], self.metric_name, state["best"] if state["best"] is not None else float("nan"),
                 state["skipped_steps"], state["skipped_samples"], self.ckpt_dir)
        return state

    def micro_step(self, batch: dict[str, Any], last_micro: bool) -> None:
        """Forward and backward one micro-batch, or note why the step cannot use it.

        Ranks decide together whether to run forward: DDP's forward is itself a collective (it
        broadcasts buffers such as BatchNorm statistics), so either every rank runs it or none does.
        """
        fatal = bool(batch["bad"]) and not self.cfg["data"]["skip_bad_samples"]
        n_fatal, n_bad, n_empty = all_reduce_sum([fatal, len(batch["bad"]), batch["size"] == 0], self.dist.device)
        if n_fatal:
            raise DataError(_first_bad_message(batch["bad"]))
        for message in batch["bad"]:
            log.warning("skipped: %s", message)
        self.state["skipped_samples"] += int(n_bad)
        self.epoch_counts["skipped"] += int(n_bad)
        if n_empty:
            self.step_ok = False  # an empty batch on some rank spoils the whole step
        if not self.step_ok:
            return
        batch = move_to(batch, self.dist.device)
        # Accumulating micro-batches skip DDP's gradient all-reduce; only the step's last one syncs.
        # DDP decides this in forward, so the backward below need not sit inside the context.
        no_sync = self.ddp_model.no_sync() if self.dist.is_distributed and not last_micro else contextlib.nullcontext()
        with no_sync, autocast(self.dist.device, self.tcfg["amp"]):
            outputs = self.ddp_model(batch)
        loss = outputs["loss"]
        finite = bool(torch.isfinite(loss.detach()))
        n_nonfinite, loss_sum, n_samples, n_infeasible = all_reduce_sum(
            [not finite, float(loss.detach()) * batch["size"] if finite else 0.0, batch["size"] if finite else 0,
             int(outputs.get("num_infeasible", 0))],
            self.dist.device,
        )
        self.state["infeasible_samples"] += int(n_infeasible)
        self.epoch_counts["infeasible"] += int(n_infeasible)
        if n_nonfinite:
            self.step_ok = False
            return
        self.scaler.scale(loss / self.accumulation).backward()
        self.window_loss += loss_sum
        self.window_samples += n_samples

    def finish_step(self) -> bool:
        """Apply (or drop) the accumulated gradients, log, validate; True at the end of an epoch."""
        state = self.state
        if self.step_ok and not self.scaler.is_enabled() and not _finite_gradients(self.model):
            # A finite loss can still back-propagate inf or NaN; one update would spread it to every weight
            # and into every later checkpoint. (fp16's scaler makes this check itself.)
            log.warning("step %d: non-finite gradients from a finite loss", state["step"] + 1)
            self.step_ok = False
        if self.step_ok:
            _optimizer_step(self.model, self.optimizer, self.scaler, self.tcfg["clip_grad_norm"])
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            state["nonfinite_run"] = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            state["skipped_steps"] += 1
            state["nonfinite_run"] += 1
            log.warning("step %d skipped: non-finite loss or no usable samples (%d in a row)",
                        state["step"] + 1, state["nonfinite_run"])
            if state["nonfinite_run"] >= self.tcfg["max_nonfinite_steps"]:
                raise UserError(
                    f"stopping: {state['nonfinite_run']} steps in a row had a non-finite loss or no usable samples "
                    f"(training.max_nonfinite_steps); the last good checkpoint is in {self.ckpt_dir}"
                )
        step_lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
        self.scheduler.step()
        state["step"] += 1
        self.step_ok = True

        if state["step"] % self.tcfg["log_freq"] == 0:
            if self.dist.is_main:
                elapsed = time.perf_counter() - self.window_start
                _log_train(self.writer, self.progress, state["step"], self.window_loss / max(self.window_samples, 1),
                           step_lrs, self.window_samples / elapsed, self.dist)
            self._reset_window()
        end_of_epoch = state["step"] % self.steps_per_epoch == 0
        if _validation_due(self.tcfg["validation"], state["step"], self.steps_per_epoch, end_of_epoch) \
                or state["step"] == self.total_steps:
            self.validate()
        return end_of_epoch

    def validate(self) -> None:
        started = time.perf_counter()
        eval_model = self.ema.module if self.ema is not None else self.model
        metrics, _ = evaluate(eval_model, self.dev_set, self.vocab, self.cfg, self.dist)
        is_best = _improves(self.metric_name, metrics[self.metric_name], self.state["best"])
        if is_best:
            self.state["best"] = metrics[self.metric_name]
        self.save(is_best)
        if self.dist.is_main:
            _log_validation(self.writer, self.state["step"], metrics, self.metric_name, self.state["best"])
        self.window_start += time.perf_counter() - started  # samples/s counts training only

    def save(self, is_best: bool) -> None:
        """Write a checkpoint that continues the run exactly: all state, and every rank's RNG."""
        rng_states = gather_objects(_rng_state())
        if not self.dist.is_main:
            return
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "state": dict(self.state),
            "layout": self.layout,
            "rng": rng_states,
            "world_size": self.dist.world_size,
            "config": self.cfg,
            "vocab": self.vocab.to_state(),
        }
        path = ckpt.write_step_checkpoint(payload, self.ckpt_dir, self.state["step"],
                                          self.tcfg["keep_last_ckpts"], is_best)
        log.info("saved %s%s", path, " (best)" if is_best else "")

    def resume(self) -> Path | None:
        """Continue from the newest valid checkpoint of this run, else from `training.from_ckpt`.

        Rank 0 picks the file and every rank loads that one, so no rank can pick a file another rank
        saw corrupt or not yet written.
        """
        found = ckpt.load_newest_valid(self.ckpt_dir) if self.dist.is_main else None
        chosen = str(found[1]) if found else self.tcfg["from_ckpt"]
        chosen = broadcast_object(chosen)
        if chosen is None:
            return None
        path = Path(chosen)
        payload = found[0] if found else ckpt.load_checkpoint(path)
        saved_layout = payload.get("layout", self.layout)
        if saved_layout != self.layout:
            raise CheckpointError(
                f"checkpoint {path} was written with {_describe(saved_layout)}, this run has "
                f"{_describe(self.layout)}; resuming would change the data order and the schedule. "
                "Keep training.batch_size x processes, training.gradient_accumulation and the train split, "
                "or start in a new training.model_dir"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        if self.ema is not None and payload.get("ema") is not None:
            self.ema.load_state_dict(payload["ema"])
        self.state.update(payload["state"])
        if payload["world_size"] == self.dist.world_size:
            _set_rng_state(payload["rng"][self.dist.rank])
        else:
            log.warning("checkpoint was written by %d processes, now %d: RNG streams start afresh",
                        payload["world_size"], self.dist.world_size)
        return path

    def _reset_window(self) -> None:
        self.window_loss, self.window_samples, self.window_start = 0.0, 0.0, time.perf_counter()

    def _report_epoch(self, epoch: int) -> None:
        if self.epoch_counts["skipped"]:
            log.warning("epoch %d: %d unreadable samples skipped", epoch + 1, self.epoch_counts["skipped"])
        if self.epoch_counts["infeasible"]:
            log.warning("epoch %d: %d samples had fewer output frames than their CTC target needs; "
                        "their loss counted as 0", epoch + 1, self.epoch_counts["infeasible"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _describe(layout: dict[str, int]) -> str:
    return (f"global batch {layout['global_batch']} x accumulation {layout['gradient_accumulation']}, "
            f"{layout['train_samples']} train samples, {layout['steps_per_epoch']} steps per epoch")


def _optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    clip_norm: float | None) -> None:
    if clip_norm is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def _finite_gradients(model: torch.nn.Module) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))


def _first_bad_message(local_bad: list[str]) -> str:
    if local_bad:
        return local_bad[0]
    return "an unreadable sample on another process (see its log); set data.skip_bad_samples: true to skip"


def _validation_due(vcfg: dict[str, Any], step: int, steps_per_epoch: int, end_of_epoch: bool) -> bool:
    if vcfg["unit"] == "step":
        return step % vcfg["freq"] == 0
    return end_of_epoch and (step // steps_per_epoch) % vcfg["freq"] == 0


def _improves(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


def _rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": _numpy_state_to_tensor(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _numpy_state_to_tensor() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
            "has_gauss": has_gauss, "gauss": gauss}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _tensorboard(model_dir: Path, step: int) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events a killed run logged after its last checkpoint, so curves do not fork.
    return SummaryWriter(str(model_dir / "tensorboard"), purge_step=step or None)


def _log_train(writer: Any, progress: Progress, step: int, loss: float, lrs: dict[str, float],
               samples_per_s: float, dist: DistInfo) -> None:
    writer.add_scalar("train/loss", loss, step)
    writer.add_scalar("train/samples_per_s", samples_per_s, step)
    for name, lr in lrs.items():
        writer.add_scalar(f"train/lr/{name}", lr, step)
    memory = gpu_memory_gb(dist.device)
    if memory is not None:
        writer.add_scalar("train/gpu_memory_gb", memory, step)
    log.info(progress.update(step, f"loss {loss:.4f} lr {lrs.get('default', next(iter(lrs.values()))):.2e} "
                                   f"{samples_per_s:.1f} samples/s"))


def _log_validation(writer: Any, step: int, metrics: dict[str, Any], metric_name: str, best: float) -> None:
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}  # not breakdowns such as per_word
    for key, value in scalars.items():
        writer.add_scalar(f"dev/{key}", value, step)
    writer.flush()
    shown = " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in scalars.items())
    log.info("validation at step %d: %s (best %s %.3f)", step, shown, metric_name, best)


if __name__ == "__main__":
    run_main(main)
