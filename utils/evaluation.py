"""Distributed evaluation with exact results: each sample is scored once, on exactly one rank."""
from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

from dataset.loader import eval_batches, make_loader
from dataset.vocab import Vocabulary
from utils.distributed import DistInfo, gather_objects
from utils.errors import DataError
from utils.metrics import score

log = logging.getLogger(__name__)


def metric_options(cfg: dict[str, Any]) -> dict[str, str]:
    """Settings of the metrics beyond the task: BLEU and ROUGE's tokenisation for translation."""
    translation = cfg["testing"]["cfg"].get("translation")
    return {"metric_tokenize": translation["metric_tokenize"]} if translation else {}


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def move_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    vocab: Vocabulary,
    cfg: dict[str, Any],
    dist: DistInfo,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics over the whole split, and per-sample results in dataset order, on every rank."""
    batches = eval_batches(len(dataset), cfg["testing"]["batch_size"], dist.rank, dist.world_size)
    loader = make_loader(dataset, batches, cfg["training"]["num_workers"], cfg["training"]["random_seed"])
    was_training = model.training
    model.eval()
    rows, loss_sum, bad = [], 0.0, []
    for batch in loader:
        bad += batch["bad"]
        if batch["bad"] and not cfg["data"]["skip_bad_samples"]:
            break  # every rank must reach the gather below before the error is raised
        if batch["size"] == 0:
            continue
        batch = move_to(batch, dist.device)
        with autocast(dist.device, cfg["training"]["amp"]):
            outputs = model(batch)
        loss_sum += float(outputs["loss"]) * batch["size"]
        rows += _decoded_rows(model.decode(outputs, batch), batch, vocab)
    model.train(was_training)
    gathered = gather_objects((rows, loss_sum, bad))
    all_bad = [m for _, _, b in gathered for m in b]
    if all_bad and not cfg["data"]["skip_bad_samples"]:
        raise DataError(all_bad[0])
    for message in all_bad:
        log.warning("skipped: %s", message)
    rows = sorted((r for part, _, _ in gathered for r in part), key=lambda r: r["index"])
    metrics = score(cfg["task"], [r["reference"] for r in rows], [r["hypothesis"] for r in rows],
                    **metric_options(cfg))
    if rows and "gloss_hypothesis" in rows[0]:  # Sign2Text: the recognition branch's WER too
        metrics.update(score("S2G", [r["gloss_reference"] for r in rows], [r["gloss_hypothesis"] for r in rows]))
    metrics["loss"] = sum(part for _, part, _ in gathered) / max(len(rows), 1)
    metrics["num_samples"] = len(rows)
    metrics["num_skipped"] = len(all_bad)
    return metrics, rows


def _decoded_rows(decoded: list[list[int]] | dict[str, list[list[int]]], batch: dict[str, Any],
                  vocab: Any) -> list[dict[str, Any]]:
    """One row per sample: the reference and the decoded hypothesis, and for a model that also recognises
    glosses (its `decode` gives `text` and `gloss` ids) the gloss reference and hypothesis."""
    texts = decoded["text"] if isinstance(decoded, dict) else decoded
    rows = [{"index": index, "name": name, "reference": ref, "hypothesis": vocab.decode(ids)}
            for index, name, ref, ids in zip(batch["index"], batch["name"], batch["text"], texts)]
    if isinstance(decoded, dict):
        for row, reference, ids in zip(rows, batch["gloss_text"], decoded["gloss"]):
            row.update(gloss_reference=reference, gloss_hypothesis=vocab.glosses.decode(ids))
    return rows
