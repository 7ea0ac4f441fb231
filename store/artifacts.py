"""Model artifacts on a filesystem (a local folder or a shared volume).

A save is atomic: the bytes go to a temporary file in the destination folder,
are flushed and fsynced, then renamed over the final name and the folder is
fsynced; a crash leaves either the old file or the new one, never a mix. Loads
verify size and SHA-256 before unpickling anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from store.dto import ArtifactRef
from store.errors import ArtifactCorrupt

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
ID_SEPARATOR = "\x00"  # never part of an external id (the API refuses it)


def pack_ids(ids: list[str]) -> torch.Tensor:
    """A list of ids as one uint8 tensor: UTF-8, separated by NUL.

    Loading an artifact unpickles it with ``weights_only=True``, whose unpickler is
    Python code: 200,000 ids as a list of strings took 0.9 s of GIL-bound work in
    the serving process at every swap, the same ids packed take milliseconds."""
    if any(ID_SEPARATOR in i for i in ids):
        raise ValueError("ids must not contain NUL")
    data = ID_SEPARATOR.join(ids).encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(
        0, dtype=torch.uint8)


def unpack_ids(packed: Any, count: int) -> list[str]:
    """The ``count`` ids :func:`pack_ids` packed (a plain list is returned as is)."""
    if isinstance(packed, list):
        return [str(i) for i in packed]
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ValueError("packed ids must be a 1-d uint8 tensor")
    if count == 0:
        return []
    ids = packed.numpy().tobytes().decode("utf-8").split(ID_SEPARATOR)
    if len(ids) != count:
        raise ValueError(f"{len(ids)} packed ids, expected {count}")
    return ids


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories can't be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ArtifactStore:
    """Payload dicts (tensors, numbers, strings, lists) saved under ``root``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _resolve(self, name: str) -> Path:
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"artifact name must be a relative path inside the store: {name!r}")
        return self.root.joinpath(*relative.parts)

    def save(self, name: str, payload: dict[str, Any]) -> ArtifactRef:
        """Atomically write ``payload`` to ``name`` (relative to the root, e.g.
        ``"v0003.pt"``), replacing any file of that name."""
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        final = self._resolve(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{final.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        _fsync_dir(final.parent)
        log.info("saved artifact %s (%d bytes, sha256 %s)", name, len(data), digest[:12])
        return ArtifactRef(path=PurePosixPath(name).as_posix(), sha256=digest, size_bytes=len(data))

    def load(self, ref_path: str, sha256: str, size_bytes: int | None = None) -> dict[str, Any]:
        """Read, verify and unpickle an artifact (tensors land on the CPU).

        Raises ArtifactCorrupt if it is missing, its size or checksum differs,
        or it does not hold a dict."""
        path = self._resolve(ref_path)
        try:
            data = path.read_bytes()
        except FileNotFoundError as error:
            raise ArtifactCorrupt(f"artifact {ref_path!r} is missing") from error
        except OSError as error:
            raise ArtifactCorrupt(f"artifact {ref_path!r} cannot be read: {error}") from error
        if size_bytes is not None and len(data) != size_bytes:
            raise ArtifactCorrupt(
                f"artifact {ref_path!r} has {len(data)} bytes, expected {size_bytes}"
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise ArtifactCorrupt(f"artifact {ref_path!r} has sha256 {digest}, expected {sha256}")
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as error:
            raise ArtifactCorrupt(f"artifact {ref_path!r} cannot be loaded: {error}") from error
        if not isinstance(payload, dict):
            raise ArtifactCorrupt(f"artifact {ref_path!r} holds {type(payload).__name__}, not dict")
        return payload

    def exists(self, ref_path: str) -> bool:
        return self._resolve(ref_path).is_file()

    def remove(self, ref_path: str) -> bool:
        """Delete an artifact; False if it was not there."""
        try:
            self._resolve(ref_path).unlink()
        except FileNotFoundError:
            return False
        return True

    def list_files(self) -> list[str]:
        """Finished artifacts at the top of the root (no temporary files)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_file() and not p.name.endswith(TEMP_SUFFIX))

    def remove_orphans(
        self, keep: set[str], min_age_s: float = 300.0, prune_unreferenced: bool = False
    ) -> list[str]:
        """Delete temporary leftovers of interrupted saves and, with
        ``prune_unreferenced``, finished files not named in ``keep`` (paths relative
        to the root). Files in ``keep`` and files younger than ``min_age_s`` seconds
        (a save in progress elsewhere) are left alone. Returns what was removed."""
        if not self.root.is_dir():
            return []
        keep_paths = {PurePosixPath(k).as_posix() for k in keep}
        cutoff = time.time() - min_age_s
        removed: list[str] = []
        for path in sorted(self.root.rglob("*")):
            if not path.is_file():
                continue
            relative = path.relative_to(self.root).as_posix()
            is_temp = path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)
            if relative in keep_paths or not (is_temp or prune_unreferenced):
                continue
            try:
                if path.stat().st_mtime > cutoff:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(relative)
            log.info("removed orphan artifact file %s", relative)
        return removed
