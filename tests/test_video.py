import av
import numpy as np
import pytest

from dataset.video import read_video
from utils.errors import DataError


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for t in range(30):
            frame = np.zeros((64, 96, 3), np.uint8)
            frame[:, :, 0] = 8 * t  # red ramps up over time
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_reads_rgb_frames_resizes_and_samples_in_order(mp4):
    frames = read_video(mp4)
    assert frames.shape == (30, 64, 96, 3) and frames.dtype == np.uint8
    assert abs(int(frames[10, 32, 48, 0]) - 80) <= 3 and frames[10, 32, 48, 2] <= 3  # RGB, not BGR
    small = read_video(mp4, size=(32, 48), max_frames=10)
    assert small.shape == (10, 32, 48, 3)
    red = small[:, 16, 24, 0].astype(int)
    assert (np.diff(red) > 0).all()  # the sampled frames keep their order


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "missing"])
def test_unreadable_files_raise_one_error_naming_the_file(mp4, tmp_path, damage):
    path = tmp_path / f"{damage}.mp4"
    if damage == "truncated":
        path.write_bytes(mp4.read_bytes()[:200])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("this is not a video\n" * 50)
    with pytest.raises(DataError) as err:
        read_video(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_split_list_that_is_a_folder_is_one_data_error(tmp_path):
    from dataset.grid import read_split_list

    with pytest.raises(DataError, match=f"split list {tmp_path} is not a file"):
        read_split_list(tmp_path)
