"""AgiBotWorld-Alpha for the fisheye example: download a task's observations, keep one camera, and cut its videos
into ~5 s windows under datasets/agibot_<camera>/{train,val}/videos (captions into metas/ when
datasets/agibot_<camera>.jsonl, lines {"video_clip": stem, "caption": ...}, is present), as NVIDIA's guide.

    python scripts/prepare_agibot_fisheye_data.py                 # download task 327, extract, clean
    python scripts/prepare_agibot_fisheye_data.py --delete-only   # only clean existing data
    python scripts/prepare_agibot_fisheye_data.py --split-only --val_episode_ids 685393

The download needs `huggingface-cli login` and the dataset's license accepted. Windows: `--window-size` seconds
each; a remainder up to `--min-last-window` s stays one window, a longer one is split in two. A window is named
task_<task>_episode_<episode>_window_<i>_frame_<first>-<last>.mp4 and re-encoded (H.264) with PyAV. Then embed
each split with `python -m scripts.get_t5_embeddings --dataset_path datasets/agibot_head_center_fisheye_color/train`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_predict2.data.video import probe_video, read_video_window, write_video  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task_ids", nargs="+", type=int, default=[327], help="AgiBotWorld task ids")
    p.add_argument("--data_dir", type=Path, default=Path("datasets/agibot"), help="where the download goes")
    p.add_argument("--repo_id", default="agibot-world/AgiBotWorld-Alpha", help="Hugging Face dataset id")
    p.add_argument("--keep_tar", action="store_true", help="keep the tar files after extraction")
    p.add_argument("--camera", default="head_center_fisheye_color", help="the camera video to keep")
    p.add_argument("--delete-only", dest="delete_only", action="store_true", help="only clean existing data")
    p.add_argument("--split-only", dest="split_only", action="store_true", help="only cut existing videos")
    p.add_argument("--window-size", dest="window_size", type=float, default=5.0, help="window length, seconds")
    p.add_argument("--min-last-window", dest="min_last_window", type=float, default=7.5,
                   help="a remainder up to this many seconds stays one window")  # fmt: skip
    p.add_argument("--val_episode_ids", nargs="*", default=[], help="episodes whose windows go to val/")
    return p.parse_args(argv)


def windows(duration: float, window_size: float, min_last_window: float) -> list[tuple[float, float]]:
    """(start, end) seconds of each window (the reference's rule)."""
    out, t = [], 0.0
    while t < duration:
        remaining = duration - t
        if remaining <= window_size + min_last_window:
            if remaining <= min_last_window:
                out.append((t, duration))
            else:
                out += [(t, t + window_size), (t + window_size, duration)]
            break
        out.append((t, t + window_size))
        t += window_size
    return out


def camera_videos(data_dir: Path, camera: str, task_ids: list[int]) -> list[tuple[str, str, Path]]:
    """(task id, episode id, path) of observations/<task>/<episode>/videos/<camera>.mp4."""
    found = []
    for task in task_ids:
        for path in sorted((data_dir / "observations" / str(task)).rglob(f"{camera}.mp4")):
            found.append((str(task), path.parent.parent.name, path))
    return found


def split_videos(args: argparse.Namespace) -> Path:
    out = args.data_dir.parent / f"agibot_{args.camera}"
    val = {str(e) for e in args.val_episode_ids}
    made = 0
    for task, episode, path in camera_videos(args.data_dir, args.camera, args.task_ids):
        info = probe_video(path)
        videos = out / ("val" if episode in val else "train") / "videos"
        videos.mkdir(parents=True, exist_ok=True)
        for i, (start, end) in enumerate(windows(info.num_frames / info.fps, args.window_size, args.min_last_window)):
            first, last = int(start * info.fps), min(int(end * info.fps), info.num_frames) - 1
            frames, fps = read_video_window(path, first, last - first + 1)
            write_video(videos / f"task_{task}_episode_{episode}_window_{i}_frame_{first}-{last}.mp4", frames, fps)
            made += 1
    print(f"{made} windows written under {out}/{{train,val}}/videos")
    write_captions(out, args.data_dir.parent / f"agibot_{args.camera}.jsonl")
    return out


def write_captions(out: Path, jsonl: Path) -> None:
    """metas/<stem>.txt next to each window of the caption file; windows without a caption are listed."""
    if not jsonl.is_file():
        print(f"no caption file {jsonl}: write metas/<stem>.txt for each video yourself")
        return
    captions = {}
    for line in jsonl.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            if item.get("video_clip") and item.get("caption"):
                captions[item["video_clip"]] = item["caption"]
    missing, written = [], 0
    for video in sorted(out.glob("*/videos/*.mp4")):
        if video.stem in captions:
            metas = video.parent.parent / "metas"
            metas.mkdir(exist_ok=True)
            (metas / f"{video.stem}.txt").write_text(captions[video.stem], encoding="utf-8")
            written += 1
        else:
            missing.append(video.name)
    shown = "".join(f"\n  {m}" for m in missing[:5])
    print(f"captions written: {written}, videos without a caption: {len(missing)}{shown}")


def clean(data_dir: Path, camera: str, task_ids: list[int]) -> None:
    """Keep only videos/<camera>.mp4 of each episode (depth, tactile and the other cameras are removed)."""
    for task in task_ids:
        task_dir = data_dir / "observations" / str(task)
        for episode in sorted(d for d in task_dir.glob("*") if d.is_dir()):
            for sub in episode.iterdir():
                if sub.is_dir() and sub.name != "videos":
                    shutil.rmtree(sub)
            for video in (episode / "videos").glob("*.mp4"):
                if video.name != f"{camera}.mp4":
                    video.unlink()


def download(args: argparse.Namespace) -> None:
    from huggingface_hub import snapshot_download

    patterns = [f"observations/{t}/*.tar" for t in args.task_ids] + [f"task_info/task_{t}.json" for t in args.task_ids]
    snapshot_download(repo_id=args.repo_id, repo_type="dataset", local_dir=args.data_dir, allow_patterns=patterns)
    for tar in sorted((args.data_dir / "observations").rglob("*.tar")):
        with tarfile.open(tar) as f:
            f.extractall(tar.parent, filter="data")
        if not args.keep_tar:
            tar.unlink()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.split_only:
        split_videos(args)
        return 0
    if not args.delete_only:
        download(args)
    clean(args.data_dir, args.camera, args.task_ids)
    print(f"next: python scripts/prepare_agibot_fisheye_data.py --split-only --data_dir {args.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
