"""Synthetic datasets for the data/VAE tests: tiny videos written with PyAV, random embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from cosmos_predict2.data.video import write_video
from cosmos_predict2.text.embeddings import save_embedding_pickle

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
CARPHONE = TESTDATA / "carphone_pristine.mp4"


def frame_pattern(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """uint8 frames_T_H_W_3 whose mean brightness encodes the frame index (recoverable after lossy coding)."""
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t] = (t * 7) % 250
        frames[t, : height // 2, : width // 2, 0] = 255  # a red quadrant, to check orientation and crops
    return frames


def frame_index_of(frame_H_W_3: np.ndarray, height: int | None = None) -> int:
    """Invert frame_pattern using the bottom-right quadrant (unaffected by the red square)."""
    h, w = frame_H_W_3.shape[:2]
    return round(float(frame_H_W_3[h // 2 + 2 :, w // 2 + 2 :, 1].mean()) / 7)


def truncated_copy(src: Path, dst: Path, keep: float = 0.5) -> Path:
    """A truncated mp4 whose index is at the front: remux `src` with the moov atom first ("faststart", no
    re-encoding), then keep only the first `keep` fraction of the bytes. The header still claims every frame."""
    import av

    remuxed = dst.with_name(dst.stem + "_faststart.mp4")
    with av.open(str(src)) as inp, av.open(str(remuxed), "w", options={"movflags": "faststart"}) as out:
        in_stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        for packet in inp.demux(in_stream):
            if packet.dts is not None:
                packet.stream = out_stream
                out.mux(packet)
    data = remuxed.read_bytes()
    remuxed.unlink()
    assert data.find(b"moov") < data.find(b"mdat"), "the index must come first for the header to survive the cut"
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def make_dataset(root: Path, clips: dict[str, int], height: int = 48, width: int = 64, dim: int = 32) -> Path:
    """Write videos/<stem>.mp4 (n frames each), metas/<stem>.txt and t5_xxl/<stem>.pickle under root."""
    for sub in ("videos", "metas", "t5_xxl"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, n in clips.items():
        write_video(root / "videos" / f"{stem}.mp4", frame_pattern(n, height, width), fps=16)
        (root / "metas" / f"{stem}.txt").write_text(f"A video of {stem}.", encoding="utf-8")
        save_embedding_pickle(root / "t5_xxl" / f"{stem}.pickle", rng.standard_normal((5, dim)).astype(np.float32))
    return root


class IndexDataset:
    """A cheap map-style dataset for loader tests: item i is its index plus a draw from torch's RNG (so the
    per-item seeding of the training stream is visible)."""

    def __init__(self, n: int = 8) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return {"index": index, "noise": torch.rand(())}


def tagging_collate():
    """A collate_fn factory (lazy-node target): default collation plus a marker key."""

    def collate(items: list) -> dict:
        return {**default_collate(items), "collated_by": "tagging_collate"}

    return collate


class TaggedLoader(DataLoader):
    """A DataLoader subclass: the configured loader class must be the one built."""
