"""Camera drivers: the capture thread's newest-frame handoff, video files and image folders, a
simulated unplug that is reopened, and V4L2 mode negotiation (the device itself only where one exists)."""

from __future__ import annotations

import glob
import time
from types import MappingProxyType

import numpy as np
import pytest
from vla_runtime.drivers.cameras import v4l2, v4l2_modes, video
from vla_runtime.drivers.cameras.base import CameraError, ThreadedCamera
from vla_runtime.runtime.robot_description import CameraSpec

cv2 = pytest.importorskip("cv2", reason="cameras need opencv-python-headless")
pytestmark = pytest.mark.timeout(60)


def write_folder(root, n=6, size=(24, 32)):
    """PNGs whose red channel is 10 * index (lossless, so each frame is identified by its pixels)."""
    root.mkdir()
    for i in range(n):
        image = np.zeros((*size, 3), np.uint8)
        image[..., 2] = 10 * i  # OpenCV writes BGR: channel 2 is red
        cv2.imwrite(str(root / f"frame_{i:03d}.png"), image)
    return root


def write_clip(path, n=8, size=(48, 64), fps=20.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size[1], size[0]))
    assert writer.isOpened()
    for i in range(n):
        image = np.zeros((*size, 3), np.uint8)
        image[..., 2] = 25 * i
        writer.write(image)
    writer.release()
    return path


def camera(**options) -> ThreadedCamera:
    return video.make_camera(CameraSpec(name="front", kind="video", options=MappingProxyType(options)))


def index_of(frame) -> int:
    return int(frame.image[0, 0, 0]) // 10


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_image_folder_frames_are_rgb_in_order_with_capture_times(tmp_path):
    cam = camera(path=str(write_folder(tmp_path / "imgs")), fps=50.0, loop=False)
    try:
        wait_for(lambda: cam.frames == 6)
        frame = cam.read(time.monotonic())
        assert frame.image.dtype == np.uint8 and frame.image.shape == (24, 32, 3) and frame.image.flags.c_contiguous
        assert index_of(frame) == 5 and frame.image[0, 0, 2] == 0  # red is channel 0 after BGR -> RGB
        assert frame.t_device is None and frame.t_capture <= time.monotonic()
        time.sleep(0.2)  # loop = false: the last frame stays and goes stale
        again = cam.read(time.monotonic())
        assert again is frame and cam.frames == 6
    finally:
        cam.close()


def test_read_hands_over_only_the_newest_frame_without_waiting(tmp_path):
    cam = camera(path=str(write_folder(tmp_path / "imgs", n=20)), fps=100.0, loop=True)
    try:
        reads, t_read = [], []
        for _ in range(6):
            t = time.perf_counter()
            reads.append(cam.read(time.monotonic()))
            t_read.append(time.perf_counter() - t)
            time.sleep(0.05)  # five frames arrive between reads
        stamps = [f.t_capture for f in reads]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # always a newer frame
        jumps = [(index_of(b) - index_of(a)) % 20 for a, b in zip(reads, reads[1:], strict=False)]
        assert max(jumps) >= 2  # frames in between were dropped, not queued
        assert max(t_read) < 0.01  # a read never waits for the device
    finally:
        cam.close()


def test_video_file_is_resized_and_loops(tmp_path):
    cam = camera(path=str(write_clip(tmp_path / "clip.avi")), width=32, height=24, fps=80.0)
    try:
        wait_for(lambda: cam.frames > 12)  # 8 frames in the file: it looped
        assert cam.read(time.monotonic()).image.shape == (24, 32, 3)
    finally:
        cam.close()


def test_a_stopped_source_goes_stale_then_is_reopened(tmp_path):
    cam = camera(path=str(write_folder(tmp_path / "imgs")), fps=50.0, stop_after_frames=3, resume_after=0.4)
    try:
        wait_for(lambda: cam.frames == 3)
        last = cam.read(time.monotonic())
        time.sleep(0.25)
        assert cam.read(time.monotonic()) is last and cam.frames == 3  # unplugged: nothing new, the frame ages
        assert time.monotonic() - last.t_capture > 0.2
        wait_for(lambda: cam.reopens == 1 and cam.frames > 3)  # replugged: reopened with backoff
        assert cam.read(time.monotonic()).t_capture > last.t_capture
        assert index_of(cam.read(time.monotonic())) >= 3  # the clip continues where it stopped
    finally:
        cam.close()


def test_an_unreadable_frame_is_a_loss_that_the_thread_survives(tmp_path):
    folder = write_folder(tmp_path / "imgs", n=6)
    (folder / "frame_002.png").write_bytes(b"not a png")
    cam = camera(path=str(folder), fps=50.0, loop=False)
    try:
        wait_for(lambda: cam.reopens == 1 and index_of(cam.read(time.monotonic())) == 5)
        assert cam.frames == 5  # every readable frame, the bad one skipped
    finally:
        cam.close()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"path": "/nonexistent/clip.mp4"}, "no such video file or image folder"),
        ({"path": "."}, "no .png/.jpg/.jpeg/.bmp images"),
        ({"path": "x", "width": 32}, "width and height go together"),
    ],
)
def test_video_mistakes_are_one_line(options, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((CameraError, ValueError), match=message) as info:
        camera(**options)
    assert "\n" not in str(info.value)


# -- V4L2 ---------------------------------------------------------------------------------------------
WANT = v4l2.Mode(640, 480, 30.0, "MJPG")


@pytest.mark.parametrize(
    "got, ok",
    [
        (v4l2.Mode(640, 480, 30.0, "MJPG"), True),
        (v4l2.Mode(640, 480, 29.97, "MJPG"), True),  # driver rounding
        (v4l2.Mode(640, 480, 30.0, "YUYV"), False),  # no MJPG: the camera fell back to raw
        (v4l2.Mode(1280, 720, 30.0, "MJPG"), False),  # nearest size it has
        (v4l2.Mode(640, 480, 15.0, "MJPG"), False),  # USB bandwidth halves the rate
    ],
)
def test_mode_read_back_is_checked(got, ok):
    if ok:
        v4l2.check_mode("/dev/video0", WANT, got)
        return
    with pytest.raises(CameraError) as info:
        v4l2.check_mode("/dev/video0", WANT, got)
    message = str(info.value)
    assert f"cannot do {WANT}" in message and f"it gave {got}" in message and "--list-formats-ext" in message
    assert "\n" not in message


def test_manual_exposure_is_read_back_too():
    want = v4l2.Mode(640, 480, 30.0, "MJPG", exposure=100.0)
    v4l2.check_mode("cam", want, v4l2.Mode(640, 480, 30.0, "MJPG", exposure=102.0))
    with pytest.raises(CameraError, match="exposure 100; it gave .* exposure 300"):
        v4l2.check_mode("cam", want, v4l2.Mode(640, 480, 30.0, "MJPG", exposure=300.0))


def test_fourcc_codes_and_option_checks():
    assert v4l2.fourcc_text(cv2.VideoWriter_fourcc(*"MJPG")) == "MJPG"
    assert v4l2.fourcc_text(cv2.VideoWriter_fourcc(*"YUYV")) == "YUYV"
    assert v4l2.device_label(2) == "/dev/video2"
    with pytest.raises(ValueError, match="fourcc 'H264' is not one of"):
        v4l2.V4L2Options(fourcc="H264")


def test_a_refusal_names_the_modes_the_device_lists():
    listed = [v4l2_modes.ListedMode("YUYV", 640, 480, (30.0, 15.0)), v4l2_modes.ListedMode("MJPG", 1280, 720, (30.0,))]
    got = v4l2.Mode(640, 480, 30.0, "YUYV")
    with pytest.raises(CameraError, match=r"it lists 640x480 YUYV @ 30/15 fps, 1280x720 MJPG @ 30 fps$"):
        v4l2.check_mode("/dev/video0", WANT, got, lambda: v4l2_modes.describe_modes(listed))
    many = [v4l2_modes.ListedMode("MJPG", 16 * i, 16 * i, (30.0,)) for i in range(1, 20)]
    assert v4l2_modes.describe_modes(many, most=3).endswith("48x48 MJPG @ 30 fps and 16 more")


def test_v4l2_enumeration_structs_match_videodev2():
    # request numbers as linux/videodev2.h defines them (_IOWR('V', nr, struct))
    assert v4l2_modes.VIDIOC_ENUM_FMT == 0xC0405602
    assert v4l2_modes.VIDIOC_ENUM_FRAMESIZES == 0xC02C564A
    assert v4l2_modes.VIDIOC_ENUM_FRAMEINTERVALS == 0xC034564B
    fmt = v4l2_modes.pack_fmtdesc(0)
    fmt[44:48] = v4l2_modes.fourcc_code("MJPG").to_bytes(4, "little")  # the driver fills pixelformat
    assert v4l2_modes.unpack_fmtdesc(bytes(fmt)) == "MJPG"
    discrete = v4l2_modes.FRMSIZE.pack(0, v4l2_modes.fourcc_code("YUYV"), 1, 640, 480, 0, 0, 0, 0, 0, 0)
    assert v4l2_modes.unpack_frmsize(discrete) == (640, 480, True)
    stepwise = v4l2_modes.FRMSIZE.pack(0, 0, 3, 16, 1920, 8, 16, 1080, 8, 0, 0)
    assert v4l2_modes.unpack_frmsize(stepwise) == (1920, 1080, False)
    interval = v4l2_modes.FRMIVAL.pack(0, 0, 640, 480, 1, 1, 30, 0, 0, 0, 0, 0, 0)
    assert v4l2_modes.unpack_frmival(interval) == 30.0
    assert v4l2_modes.unpack_frmival(v4l2_modes.FRMIVAL.pack(0, 0, 640, 480, 2, 1, 30, 1, 5, 0, 0, 0, 0)) is None
    assert v4l2_modes.list_modes("/dev/null") == [] and v4l2_modes.list_modes("/nonexistent/video9") == []


def test_an_absent_device_is_refused_in_one_line():
    spec = CameraSpec(name="wrist", kind="v4l2", options=MappingProxyType({"device": "/dev/video-absent-7"}))
    with pytest.raises(CameraError, match="cannot open camera /dev/video-absent-7; is it plugged in") as info:
        v4l2.make_camera(spec)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not glob.glob("/dev/video*"), reason="no V4L2 camera on this machine (/dev/video* absent)")
def test_a_real_v4l2_camera_streams_at_the_mode_it_reports():
    device = sorted(glob.glob("/dev/video*"))[0]
    assert v4l2_modes.list_modes(device), f"{device} lists no capture modes"
    spec = CameraSpec(name="front", kind="v4l2", options=MappingProxyType({"device": device}))
    try:
        cam = v4l2.make_camera(spec)
    except CameraError as exc:  # present but not at the default mode: the refusal itself is the behaviour
        assert "it gave" in str(exc) or "cannot open" in str(exc)
        return
    try:
        frame = cam.read(time.monotonic())
        assert frame.image.shape == (480, 640, 3) and frame.image.dtype == np.uint8
    finally:
        cam.close()
