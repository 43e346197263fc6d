"""Checkpoints: atomic writes, keep-last-k, best-by-metric, and finding the newest valid one.

Layout under `model_dir/ckpts/`: `step_{N}.ckpt` at each validation, `last.ckpt` and `best.ckpt`.
Every file is written through `atomic_write` (a temporary name, then `os.replace`), so a crash leaves
either the old file or the new one, never half of one; resuming deletes the temporary files a killed
process left behind. Loading checks the CRC-32 of every member (torch.load does not) and always uses
`weights_only=True`: a checkpoint holds only tensors and plain containers, and one carrying pickled code is
refused.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from utils.errors import CheckpointError, one_line

log = logging.getLogger(__name__)
STEP_FILE = re.compile(r"^step_(\d+)\.ckpt$")
TMP_FILE = re.compile(r"^\..+\.\d+\.tmp$")
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+)")


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Create or replace `path` with what `write(binary_file)` writes: a crash leaves the old or the new file.

    Writes a temporary file in the same folder, flushes and fsyncs it, moves it into place with
    `os.replace` and fsyncs the folder, so the rename itself survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")  # TMP_FILE matches these names


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # best effort: Windows cannot open a folder, some file systems refuse fsync on one
        pass


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with `weights_only=True`; refuse pickled code, report truncated or corrupt files."""
    try:
        _check_crc(path)
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # torch raises many types for corrupt archives and refused globals
        refused = _REFUSED_GLOBAL.search(str(err))  # torch's own text puts it after 300 characters of advice
        reason = (f"it refers to {refused.group(1)}, and a checkpoint may hold only tensors and plain containers"
                  if refused else one_line(err))
        raise CheckpointError(f"checkpoint {path} cannot be loaded safely: {reason}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict, got {type(state).__name__}")
    return state


def _check_crc(path: str | os.PathLike) -> None:
    """Read every member of a zip checkpoint to its end, so that zipfile checks its CRC-32.

    torch.load does not: a flipped bit in a tensor would load as a wrong weight. Members with a CRC of 0
    are passed over (torch writes 0 when `torch.serialization.set_crc32_options(False)` is in force).
    """
    if not zipfile.is_zipfile(path):
        return  # a legacy (non-zip) file, or one too truncated to be a zip: torch.load reports it
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.CRC:
                with archive.open(info) as member:
                    while member.read(1 << 24):
                        pass


def step_checkpoints(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """`step_N.ckpt` files ordered by N (as numbers: step_10 comes after step_9)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := STEP_FILE.match(p.name))]
    return sorted(found)


def load_newest_valid(ckpt_dir: str | os.PathLike) -> tuple[dict[str, Any], Path] | None:
    """The newest `step_N.ckpt` that loads; corrupt ones are reported and passed over.

    Temporary files a killed writer left behind are deleted first.
    """
    ckpt_dir = Path(ckpt_dir)
    for orphan in ckpt_dir.glob(".*.tmp"):
        if TMP_FILE.match(orphan.name):
            log.warning("removing %s, left by an interrupted checkpoint write", orphan)
            orphan.unlink(missing_ok=True)
    for _, path in reversed(step_checkpoints(ckpt_dir)):
        try:
            return load_checkpoint(path), path
        except CheckpointError as err:
            log.warning("skipping unusable checkpoint: %s", err)
    return None


def write_step_checkpoint(
    state: dict[str, Any], ckpt_dir: str | os.PathLike, step: int, keep_last: int, is_best: bool
) -> Path:
    """Write `step_{step}.ckpt`, point `last.ckpt` (and `best.ckpt` if best) at it, prune old steps.

    A failed write (disk full, quota) is a CheckpointError; the files already there are left as they were.
    Pruning counts only steps up to `step`: a newer file can only be one that resuming found unusable, and
    counting it would delete the checkpoint just written.
    """
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / f"step_{step}.ckpt"
    try:
        save_atomic(state, path)
        _link_atomic(path, ckpt_dir / "last.ckpt")
        if is_best:
            _link_atomic(path, ckpt_dir / "best.ckpt")
    except Exception as err:
        cause = _os_error_in(err)
        if cause is None:
            raise
        raise CheckpointError(f"checkpoint {path} could not be written ({one_line(cause)}); "
                              f"the checkpoints already in {ckpt_dir} are intact") from None
    older = [p for s, p in step_checkpoints(ckpt_dir) if s <= step]
    for old in older[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def _os_error_in(err: BaseException | None) -> OSError | None:
    """The OSError behind `err`: torch.save's zip writer replaces a failed write's OSError with a RuntimeError."""
    while err is not None and not isinstance(err, OSError):
        err = err.__context__
    return err


def _link_atomic(src: Path, dst: Path) -> None:
    """Make `dst` a hard link to `src` (a copy where links are not supported), atomically."""
    tmp = _tmp_path(dst)
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
        _fsync_dir(dst.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        save_atomic(load_checkpoint(src), dst)


def strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    if all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def load_weights(module: torch.nn.Module, path: str | os.PathLike, what: str) -> None:
    """Initialise `module` strictly from a weights file: a plain state_dict or one of our checkpoints."""
    state = load_checkpoint(path)
    state_dict = strip_prefix(state.get("model", state))
    load_state_strict(module, state_dict, f"{what}: {path}")
    log.info("%s: loaded %d tensors from %s", what, len(state_dict), path)


def weights_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of names, dtypes, shapes and values: which weights made something (e.g. a feature cache)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_state_strict(module: torch.nn.Module, state_dict: dict[str, Any], source: str) -> None:
    """`module.load_state_dict(state_dict, strict=True)`; a mismatch is a CheckpointError naming `source`."""
    missing, unexpected = _mismatch(module, state_dict)
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match the model: missing keys {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected keys {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''}"
        )
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:  # shapes differ
        raise CheckpointError(f"{source} does not match the model: {one_line(err, 500)}") from None


def _mismatch(module: torch.nn.Module, state_dict: dict[str, Any]) -> tuple[list[str], list[str]]:
    expected = set(module.state_dict())
    return sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)


def evaluation_weights(payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A training checkpoint's weights to evaluate and ship: the EMA's when the run kept one (what it validated
    with), else the raw weights; and which ('ema' or 'model')."""
    ema = payload.get("ema")
    if ema:
        return {k.removeprefix("module."): v for k, v in ema.items() if k.startswith("module.")}, "ema"
    return payload["model"], "model"
