"""Artifacts: atomic saves, verified loads, crash leftovers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from store import ArtifactCorrupt, ArtifactStore, pack_ids, unpack_ids


def _payload(scale: float = 1.0) -> dict[str, object]:
    return {
        "user_emb": torch.randn(7, 4) * scale,
        "item_bias": torch.zeros(5),
        "version": 3,
        "lr": 0.01,
        "strategy": "sml",
        "shape": [7, 4],
        "config": {"embed_dim": 4, "names": ["a", "b"]},
    }


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path / "models")
    payload = _payload()
    ref = artifacts.save("v0001.pt", payload)
    file = tmp_path / "models" / "v0001.pt"
    assert ref.path == "v0001.pt"
    assert ref.size_bytes == file.stat().st_size
    assert ref.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    loaded = artifacts.load(ref.path, ref.sha256, ref.size_bytes)
    assert torch.equal(loaded["user_emb"], payload["user_emb"])  # type: ignore[arg-type]
    assert loaded["config"] == {"embed_dim": 4, "names": ["a", "b"]}
    assert (loaded["version"], loaded["lr"], loaded["strategy"]) == (3, 0.01, "sml")
    assert artifacts.exists("v0001.pt")
    nested = artifacts.save("state/p0003.pt", {"theta": torch.ones(2)})
    assert nested.path == "state/p0003.pt"
    assert torch.equal(artifacts.load(nested.path, nested.sha256)["theta"], torch.ones(2))
    assert [p.name for p in (tmp_path / "models").rglob("*.tmp")] == []


def test_corrupt_and_missing_artifacts_are_refused(tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path)
    ref = artifacts.save("v1.pt", _payload())
    path = tmp_path / "v1.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupt, match="sha256"):
        artifacts.load(ref.path, ref.sha256)
    path.write_bytes(bytes(data[:-10]))
    with pytest.raises(ArtifactCorrupt, match="bytes"):
        artifacts.load(ref.path, ref.sha256, ref.size_bytes)
    path.unlink()
    with pytest.raises(ArtifactCorrupt, match="missing"):
        artifacts.load(ref.path, ref.sha256)
    not_a_dict = artifacts.save("list.pt", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ArtifactCorrupt, match="not dict"):
        artifacts.load(not_a_dict.path, not_a_dict.sha256)
    with pytest.raises(ValueError):
        artifacts.save("../outside.pt", _payload())


def test_failed_rename_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    artifacts = ArtifactStore(tmp_path)
    old = artifacts.save("v1.pt", _payload(1.0))

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk went away"):
        artifacts.save("v1.pt", _payload(2.0))
    monkeypatch.undo()
    assert artifacts.load(old.path, old.sha256)["version"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1.pt"]


def test_crash_between_write_and_rename(tmp_path: Path) -> None:
    """A process killed after writing the temporary file but before the rename
    leaves the previous artifact intact and a leftover that remove_orphans clears."""
    artifacts = ArtifactStore(tmp_path)
    old = artifacts.save("v1.pt", _payload(1.0))
    script = textwrap.dedent(
        f"""
        import os, torch
        from store import ArtifactStore
        os.replace = lambda src, dst: os._exit(17)  # die right before the rename
        ArtifactStore({str(tmp_path)!r}).save("v1.pt", {{"w": torch.ones(3)}})
        """
    )
    crashed = subprocess.run([sys.executable, "-c", script], timeout=120, check=False)
    assert crashed.returncode == 17
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1
    assert artifacts.load(old.path, old.sha256)["strategy"] == "sml"

    assert artifacts.remove_orphans(keep={"v1.pt"}) == []  # too young to be sure
    assert artifacts.remove_orphans(keep={"v1.pt"}, min_age_s=0) == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1.pt"]


def test_remove_orphans_prunes_only_when_asked(tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path)
    kept = artifacts.save("v2.pt", _payload())
    artifacts.save("v1.pt", _payload())
    assert artifacts.remove_orphans(keep={kept.path}, min_age_s=0) == []
    removed = artifacts.remove_orphans(keep={kept.path}, min_age_s=0, prune_unreferenced=True)
    assert removed == ["v1.pt"]
    assert artifacts.exists("v2.pt") and not artifacts.exists("v1.pt")
    assert ArtifactStore(tmp_path / "absent").remove_orphans(set()) == []


@pytest.mark.parametrize("ids", [[], ["u1"], ["a", "bé", "数据", "x" * 128, " spaced id "]])
def test_ids_pack_into_one_tensor_and_back(tmp_path: Path, ids: list[str]) -> None:
    packed = pack_ids(ids)
    assert packed.dtype == torch.uint8 and packed.dim() == 1
    store = ArtifactStore(tmp_path)
    ref = store.save("ids.pt", {"ids": packed})
    assert unpack_ids(store.load(ref.path, ref.sha256)["ids"], len(ids)) == ids


def test_packed_ids_are_checked() -> None:
    with pytest.raises(ValueError, match="NUL"):
        pack_ids(["a\x00b"])
    with pytest.raises(ValueError, match="expected 3"):
        unpack_ids(pack_ids(["a", "b"]), 3)
    with pytest.raises(ValueError):
        unpack_ids(torch.zeros(3, dtype=torch.int64), 1)
    assert unpack_ids(["a", 7], 2) == ["a", "7"]  # format /1: a plain list
