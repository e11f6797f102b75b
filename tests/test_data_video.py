"""Video decoding with PyAV: seeking, windowing, resizing, on synthetic clips and the real carphone clip."""

import numpy as np
import pytest
import torch
from data_helpers import CARPHONE, frame_index_of, frame_pattern, truncated_copy

from cosmos_predict2.data import VideoReadError, load_clip, probe_video, read_video_window, resize_video, write_video

needs_carphone = pytest.mark.skipif(not CARPHONE.exists(), reason=f"{CARPHONE} not present")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "pattern.mp4"
    write_video(path, frame_pattern(33), fps=16)  # keyframe every 16 frames
    return path


def test_probe(synthetic):
    info = probe_video(synthetic)
    assert (info.num_frames, info.fps, info.width, info.height) == (33, 16.0, 64, 48)


@pytest.mark.parametrize("start", [0, 1, 15, 16, 20])
def test_window_is_exact_and_seeks(synthetic, start):
    stats = {}
    frames, fps = read_video_window(synthetic, start, 9, stats)
    assert frames.shape == (9, 48, 64, 3) and frames.dtype == np.uint8 and fps == 16.0
    assert [frame_index_of(f) for f in frames] == list(range(start, start + 9))
    if start >= 16:  # seeked to the keyframe at 16: the first 16 frames were never decoded
        assert stats["decoded_frames"] <= 9 + (start - 16)


def test_clip_of_exactly_num_frames_is_valid(synthetic):
    frames, _ = read_video_window(synthetic, 0, 33)
    assert len(frames) == 33
    with pytest.raises(VideoReadError, match="pattern.mp4.*ended after 33"):
        read_video_window(synthetic, 1, 33)


def test_mpeg4_codec(tmp_path):
    path = tmp_path / "m.mp4"
    write_video(path, frame_pattern(17), fps=10, codec="mpeg4")
    frames, fps = read_video_window(path, 4, 5)
    assert [frame_index_of(f) for f in frames] == [4, 5, 6, 7, 8] and fps == 10.0


@needs_carphone
def test_carphone_probe_and_seek_matches_full_decode():
    info = probe_video(CARPHONE)
    assert (info.num_frames, info.width, info.height) == (120, 176, 144)
    assert abs(info.fps - 29.97) < 0.01
    full, _ = read_video_window(CARPHONE, 0, 120)
    for start in (0, 37, 103):
        stats = {}
        window, _ = read_video_window(CARPHONE, start, 17, stats)
        np.testing.assert_array_equal(window, full[start : start + 17])


@needs_carphone
def test_carphone_resize_modes():
    video_3_T_H_W, _ = load_clip(CARPHONE, 50, 5, (48, 96))
    assert video_3_T_H_W.shape == (3, 5, 48, 96) and video_3_T_H_W.dtype == torch.uint8
    stretched, _ = load_clip(CARPHONE, 50, 5, (48, 96), resize_mode="stretch")
    assert stretched.shape == (3, 5, 48, 96) and not torch.equal(stretched, video_3_T_H_W)


def test_cover_crop_keeps_aspect_ratio():
    # A 40x80 frame whose left half is black and right half white; target 40x40 (square):
    # cover keeps the scale and crops the centre (half black, half white); stretch squeezes it.
    x = torch.zeros(1, 3, 40, 80, dtype=torch.uint8)
    x[..., 40:] = 255
    cover = resize_video(x, (40, 40), "cover")
    assert cover.shape == (1, 3, 40, 40)
    assert cover[..., :, :18].max() == 0 and cover[..., :, 22:].min() == 255
    # Downscale with antialiasing: a 1-pixel checkerboard averages to mid-grey rather than aliasing.
    board = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    board[..., ::2, ::2] = 255
    board[..., 1::2, 1::2] = 255
    small = resize_video(board, (16, 16), "stretch")
    assert 100 < small.float().mean() < 155 and small.float().std() < 10


def test_bad_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty.mp4.*0 bytes"):
        probe_video(empty)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(VideoReadError, match="corrupt.mp4"):
        read_video_window(corrupt, 0, 1)
    with pytest.raises(VideoReadError, match="missing.mp4.*not found"):
        probe_video(tmp_path / "missing.mp4")


@needs_carphone
def test_truncated_file_is_reported_as_corrupt_or_truncated(tmp_path):
    """Issue 13 item 10: the header of a truncated file (index at the front) still claims every frame."""
    from cosmos_predict2.data.video import check_video_decodes

    cut = truncated_copy(CARPHONE, tmp_path / "cut.mp4", keep=0.5)
    assert probe_video(cut).num_frames == 120  # the header is intact
    assert read_video_window(cut, 0, 17)[0].shape == (17, 144, 176, 3)  # the front still decodes
    for read in (read_video_window, check_video_decodes):
        with pytest.raises(VideoReadError, match=r"cut.mp4: the container claims 120 frames but decoding ended "
                           r"after \d+ .*corrupt or truncated") as err:  # fmt: skip
            read(cut, 103, 17)
        assert "longer clip" not in str(err.value)
