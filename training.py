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
from dataset.loader import TrainBatchSampler, make_loader
from modelling import build_model
from utils import checkpoint as ckpt
from utils.cli import base_parser, run_main
from utils.config import LOWER_IS_BETTER, load_config, save_config
from utils.distributed import DistInfo, all_reduce_sum, gather_objects, init_distributed, shutdown
from utils.errors import DataError, UserError
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
    tcfg = cfg["training"]
    model_dir, ckpt_dir = Path(tcfg["model_dir"]), Path(tcfg["model_dir"]) / "ckpts"
    setup_logging(model_dir, dist.is_main)
    if dist.is_main:
        save_config(cfg, model_dir / "config.yaml")
    seed_everything(tcfg["random_seed"] + dist.rank)

    train_set = build_dataset(cfg, "train", train=True)
    dev_set = build_dataset(cfg, "dev")
    vocab = train_set.vocab
    model = build_model(cfg, vocab).to(dist.device)
    if tcfg["sync_bn"] and dist.is_distributed:
        if dist.device.type != "cuda":
            raise UserError("training.sync_bn: torch's SyncBatchNorm runs on GPUs only; set it to false on CPUs")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    accumulation = tcfg["gradient_accumulation"]
    sampler = TrainBatchSampler(
        train_set.num_frames, tcfg["batch_size"], dist.rank, dist.world_size, tcfg["random_seed"],
        shuffle=tcfg["shuffle"], bucket=tcfg["length_bucketing"], multiple_of=accumulation,
    )
    steps_per_epoch = sampler.batches_per_epoch // accumulation
    total_steps = steps_per_epoch * tcfg["total_epoch"]
    opt_cfg = tcfg["optimization"]
    optimizer = build_optimizer(model, opt_cfg)
    scheduler = build_scheduler(optimizer, opt_cfg, total_steps, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=dist.device.type == "cuda" and tcfg["amp"] == "fp16")
    ema = build_ema(model, tcfg["ema"]["decay"]) if tcfg["ema"]["enabled"] else None
    state = {"step": 0, "epoch": 0, "best": None, "skipped_steps": 0, "skipped_samples": 0}

    resumed = resume(ckpt_dir, tcfg["from_ckpt"], dist, model, optimizer, scheduler, scaler, ema, state)
    log.info(
        "task %s: %d train / %d dev samples, %d processes x batch %d x accumulation %d, "
        "%d steps per epoch, %d steps in all, %.2fM parameters%s",
        cfg["task"], len(train_set), len(dev_set), dist.world_size, tcfg["batch_size"], accumulation,
        steps_per_epoch, total_steps, sum(p.numel() for p in model.parameters()) / 1e6,
        f", resumed from {resumed} at step {state['step']}" if resumed else "",
    )
    ddp_model = DistributedDataParallel(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None) \
        if dist.is_distributed else model
    writer = _tensorboard(model_dir, state["step"]) if dist.is_main else None
    progress = Progress(total_steps, state["step"], enabled=dist.is_main)
    metric_name = tcfg["validation"]["metric"]
    nonfinite_run, window_loss, window_samples, window_start = 0, 0.0, 0.0, time.perf_counter()

    while state["step"] < total_steps:
        epoch = state["step"] // steps_per_epoch
        state["epoch"] = epoch
        sampler.set_epoch(epoch, start_batch=(state["step"] % steps_per_epoch) * accumulation)
        train_set.set_epoch(epoch)
        loader = make_loader(train_set, sampler, tcfg["num_workers"])
        model.train()
        step_ok, micro, epoch_skipped = True, 0, 0
        for batch in loader:
            micro += 1
            last_micro = micro % accumulation == 0
            fatal = bool(batch["bad"]) and not cfg["data"]["skip_bad_samples"]
            loss = None
            # Accumulating micro-batches skip DDP's gradient all-reduce; only the step's last one syncs.
            # DDP decides this in forward, so the backward below need not sit inside the context.
            no_sync = ddp_model.no_sync() if dist.is_distributed and not last_micro else contextlib.nullcontext()
            if step_ok and batch["size"] and not fatal:
                batch = move_to(batch, dist.device)
                with no_sync, autocast(dist.device, tcfg["amp"]):
                    loss = ddp_model(batch)["loss"]
            finite = loss is not None and bool(torch.isfinite(loss.detach()))
            n_fatal, n_skipped, n_unusable, loss_sum, n_samples = all_reduce_sum(
                [float(fatal), len(batch["bad"]), float(step_ok and not finite),
                 float(loss.detach()) * batch["size"] if finite else 0.0, batch["size"] if finite else 0],
                dist.device,
            )
            if n_fatal:
                raise DataError(_first_bad_message(batch["bad"]))
            if batch["bad"]:
                for message in batch["bad"]:
                    log.warning("skipped: %s", message)
            state["skipped_samples"] += int(n_skipped)
            epoch_skipped += int(n_skipped)
            if step_ok and n_unusable == 0:
                scaler.scale(loss / accumulation).backward()
                window_loss, window_samples = window_loss + loss_sum, window_samples + n_samples
            elif step_ok:
                step_ok = False  # a non-finite loss or an empty batch on some rank spoils the whole step
            if not last_micro:
                continue

            if step_ok:
                _optimizer_step(model, optimizer, scaler, tcfg["clip_grad_norm"])
                if ema is not None:
                    ema.update_parameters(model)
                nonfinite_run = 0
            else:
                optimizer.zero_grad(set_to_none=True)
                state["skipped_steps"] += 1
                nonfinite_run += 1
                log.warning("step %d skipped: non-finite loss or no usable samples (%d in a row)",
                            state["step"] + 1, nonfinite_run)
                if nonfinite_run >= tcfg["max_nonfinite_steps"]:
                    raise UserError(
                        f"stopping: {nonfinite_run} steps in a row had a non-finite loss or no usable samples "
                        f"(training.max_nonfinite_steps); the last good checkpoint is in {ckpt_dir}"
                    )
            step_lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}
            scheduler.step()
            state["step"] += 1
            step_ok = True

            if state["step"] % tcfg["log_freq"] == 0 and dist.is_main:
                elapsed = time.perf_counter() - window_start
                _log_train(writer, progress, state["step"], window_loss / max(window_samples, 1),
                           step_lrs, window_samples / elapsed, dist)
            if state["step"] % tcfg["log_freq"] == 0:
                window_loss, window_samples, window_start = 0.0, 0.0, time.perf_counter()

            end_of_epoch = state["step"] % steps_per_epoch == 0
            if _validation_due(tcfg["validation"], state["step"], steps_per_epoch, end_of_epoch) \
                    or state["step"] == total_steps:
                eval_model = ema.module if ema is not None else model
                metrics, _ = evaluate(eval_model, dev_set, vocab, cfg, dist)
                is_best = _improves(metric_name, metrics[metric_name], state["best"])
                if is_best:
                    state["best"] = metrics[metric_name]
                save(ckpt_dir, state, cfg, vocab, model, optimizer, scheduler, scaler, ema, dist, is_best)
                if dist.is_main:
                    _log_validation(writer, state["step"], metrics, metric_name, state["best"])
            if end_of_epoch:
                if epoch_skipped:
                    log.warning("epoch %d: %d unreadable samples skipped", epoch + 1, epoch_skipped)
                break
    progress.close()
    if writer is not None:
        writer.close()
    log.info("done: %d steps, best dev %s %.3f, %d steps skipped, %d samples skipped; checkpoints in %s",
             state["step"], metric_name, state["best"] if state["best"] is not None else float("nan"),
             state["skipped_steps"], state["skipped_samples"], ckpt_dir)
    return state


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _optimizer_step(model, optimizer, scaler, clip_norm: float | None) -> None:
    if clip_norm is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


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


def save(ckpt_dir, state, cfg, vocab, model, optimizer, scheduler, scaler, ema, dist, is_best) -> None:
    """Write a checkpoint that continues the run exactly: all state, and every rank's RNG."""
    rng_states = gather_objects(_rng_state())
    if not dist.is_main:
        return
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "state": dict(state),
        "rng": rng_states,
        "world_size": dist.world_size,
        "config": cfg,
        "vocab": vocab.to_state(),
    }
    path = ckpt.write_step_checkpoint(payload, ckpt_dir, state["step"], cfg["training"]["keep_last_ckpts"], is_best)
    log.info("saved %s%s", path, " (best)" if is_best else "")


def resume(ckpt_dir, from_ckpt, dist, model, optimizer, scheduler, scaler, ema, state) -> Path | None:
    """Continue from the newest valid checkpoint of this run, else from `training.from_ckpt`."""
    found = ckpt.load_newest_valid(ckpt_dir)
    if found is None and from_ckpt:
        found = ckpt.load_checkpoint(from_ckpt), Path(from_ckpt)
    if found is None:
        return None
    payload, path = found
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    scaler.load_state_dict(payload["scaler"])
    if ema is not None and payload.get("ema") is not None:
        ema.load_state_dict(payload["ema"])
    state.update(payload["state"])
    if payload["world_size"] == dist.world_size:
        _set_rng_state(payload["rng"][dist.rank])
    else:
        log.warning("checkpoint was written by %d processes, now %d: RNG streams start afresh",
                    payload["world_size"], dist.world_size)
    return path


def _tensorboard(model_dir: Path, step: int):
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events a killed run logged after its last checkpoint, so curves do not fork.
    return SummaryWriter(str(model_dir / "tensorboard"), purge_step=step or None)


def _log_train(writer, progress: Progress, step: int, loss: float, lrs: dict[str, float], samples_per_s: float,
               dist: DistInfo) -> None:
    writer.add_scalar("train/loss", loss, step)
    writer.add_scalar("train/samples_per_s", samples_per_s, step)
    for name, lr in lrs.items():
        writer.add_scalar(f"train/lr/{name}", lr, step)
    memory = gpu_memory_gb(dist.device)
    if memory is not None:
        writer.add_scalar("train/gpu_memory_gb", memory, step)
    log.info(progress.update(step, f"loss {loss:.4f} lr {lrs.get('default', next(iter(lrs.values()))):.2e} "
                                   f"{samples_per_s:.1f} samples/s"))


def _log_validation(writer, step: int, metrics: dict[str, float], metric_name: str, best: float) -> None:
    for key, value in metrics.items():
        writer.add_scalar(f"dev/{key}", value, step)
    writer.flush()
    shown = " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
    log.info("validation at step %d: %s (best %s %.3f)", step, shown, metric_name, best)


if __name__ == "__main__":
    run_main(main)
