"""Build the demo's input video from pictures bundled with scikit-image, without any download.

The video pans and zooms slowly over the astronaut picture (a face that OpenCV's Haar cascade finds) for the
first half, then shows pictures without a human face (coffee, rocket, the cat), one per second. The face
detection step therefore has frames with and without faces to tell apart.

numpy, scikit-image and imageio-ffmpeg are the optional `demo` extra: they are imported inside the functions
so that importing this module never fails on a base install.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# H.264 with yuv420p needs even dimensions; 16:9 keeps players happy.
WIDTH = 640
HEIGHT = 360

# Pictures without a human face, shown after the astronaut scene.
_OTHER_PICTURES = ("coffee", "rocket", "chelsea")


@dataclass(frozen=True)
class Scene:
    """A stretch of the video: one picture, a crop window that moves from `start` to `end`.

    Windows are (left, top, width) in the picture's pixels; the height follows from the 16:9 ratio.
    """

    picture: str  # name of a `skimage.data` function
    seconds: int
    start: tuple[float, float, float]
    end: tuple[float, float, float]


def scene_plan(seconds: int) -> list[Scene]:
    """The scenes of a `seconds`-long video: astronaut for the first half (rounded up), then the others.

    Scene changes fall on whole seconds, so with ffmpeg's fps=1 filter frame `-0001.jpg` (t = 0 s) is always
    the astronaut and the last frame never is (as long as `seconds` >= 2).
    """
    if seconds < 1:
        raise ValueError(f"seconds must be >= 1, got {seconds}")
    face_seconds = math.ceil(seconds / 2)
    # The astronaut's face sits around x 170-270, y 60-180 of the 512x512 picture: every window keeps it in.
    scenes = [Scene("astronaut", face_seconds, start=(0, 10, 448), end=(100, 40, 384))]
    for i in range(seconds - face_seconds):
        picture = _OTHER_PICTURES[i % len(_OTHER_PICTURES)]
        scenes.append(Scene(picture, 1, start=(0, 0, 1.0), end=(0.08, 0.05, 0.85)))
    return scenes


def make_demo_video(dest: Path, seconds: int = 6, fps: int = 10) -> Path:
    """Write an H.264/yuv420p MP4 of `seconds` x `fps` frames at `dest` and return `dest`.

    Raw RGB frames are piped to the ffmpeg binary of imageio-ffmpeg, so no system ffmpeg is needed.
    """
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    scenes = scene_plan(seconds)  # validates `seconds` before anything is written
    import imageio_ffmpeg

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        *("-hide_banner", "-loglevel", "error", "-y"),
        *("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(fps), "-i", "-"),
        *("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"),
        *("-movflags", "+faststart", str(dest)),
    ]
    _encode(cmd, _frames(scenes, fps), dest)
    return dest


def _encode(cmd: list[str], frames: Iterator[np.ndarray], dest: Path) -> None:
    """Pipe `frames` into the ffmpeg `cmd`; raise RuntimeError with ffmpeg's message if it fails."""
    # stderr is read only at the end: with -loglevel error it stays far below the pipe buffer.
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    try:
        with proc.stdin:
            for frame in frames:
                proc.stdin.write(frame.tobytes())
    except BrokenPipeError:
        pass  # ffmpeg died early; its stderr (read below) says why
    except BaseException:
        proc.kill()  # a frame could not be made: do not leave a half-written video being encoded
        proc.wait()
        proc.stderr.close()
        raise
    with proc.stderr:
        err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed to encode {dest} (exit {proc.returncode}): {err.strip()}")


def expected_frame_count(seconds: int, fps: int = 10) -> int:
    """How many JPEGs `extract-frames.sh` (ffmpeg `-vf fps=1`) writes for `make_demo_video(seconds, fps)`.

    Measured, not derived from the filter's documentation: the fps filter emits an output frame for every
    whole second t = 0, 1, ... that starts before the input ends. The input's last frame starts at
    (seconds*fps - 1)/fps and lasts 1/fps, so the stream ends exactly at `seconds` and the frame that would
    sit at t = `seconds` is not produced: one JPEG per second of video. Checked with imageio-ffmpeg's
    ffmpeg 9.0 on the host and Debian bookworm's ffmpeg 5.1 in the demo image, for 1-10 s at 5/10/25 fps.
    """
    if seconds < 1 or fps < 1:
        raise ValueError(f"seconds and fps must be >= 1, got {seconds}, {fps}")
    return seconds


def _frames(scenes: list[Scene], fps: int) -> Iterator[np.ndarray]:
    """Yield every frame of the plan as a C-contiguous HEIGHT x WIDTH x 3 uint8 array."""
    import numpy as np
    from skimage import data

    for scene in scenes:
        # Converted once per scene, not per frame: the float copy is most of a frame's cost otherwise.
        picture = getattr(data, scene.picture)()[:, :, :3].astype(np.float32)
        total = scene.seconds * fps
        for i in range(total):
            progress = i / max(total - 1, 1)
            yield _render(picture, _window(picture, scene, progress))


def _window(picture: Any, scene: Scene, progress: float) -> tuple[int, int, int, int]:
    """The crop (left, top, width, height) at `progress` in [0, 1], clamped inside the picture.

    A width <= 1.0 is a fraction of the picture's width (and left/top fractions of its size), so one plan
    fits pictures of any size.
    """
    pic_h, pic_w = picture.shape[:2]
    left, top, width = (a + (b - a) * progress for a, b in zip(scene.start, scene.end, strict=True))
    if width <= 1.0:
        left, top, width = left * pic_w, top * pic_h, width * pic_w
    width = min(width, pic_w, pic_h * WIDTH / HEIGHT)  # a 16:9 window must fit in both directions
    height = width * HEIGHT / WIDTH
    left = min(max(left, 0), pic_w - width)
    top = min(max(top, 0), pic_h - height)
    return round(left), round(top), round(width), round(height)


def _render(picture: Any, window: tuple[int, int, int, int]) -> np.ndarray:
    """Crop `window` out of the float32 RGB `picture`, scale it to WIDTH x HEIGHT (bilinear), as uint8.

    Plain numpy gathers instead of `skimage.transform.resize`: ~10x faster, which matters for 60+ frames.
    """
    import numpy as np

    left, top, width, height = window
    # Sample at pixel centres of the output mapped into the window, clamped to the picture.
    ys = np.clip(top + (np.arange(HEIGHT) + 0.5) * height / HEIGHT - 0.5, 0, picture.shape[0] - 1)
    xs = np.clip(left + (np.arange(WIDTH) + 0.5) * width / WIDTH - 0.5, 0, picture.shape[1] - 1)
    y0, x0 = ys.astype(np.intp), xs.astype(np.intp)
    y1 = np.minimum(y0 + 1, picture.shape[0] - 1)
    x1 = np.minimum(x0 + 1, picture.shape[1] - 1)
    wy = (ys - y0)[:, None, None].astype(np.float32)
    wx = (xs - x0)[None, :, None].astype(np.float32)
    rows0, rows1 = picture[y0], picture[y1]
    top_row = rows0[:, x0] * (1 - wx) + rows0[:, x1] * wx
    bottom_row = rows1[:, x0] * (1 - wx) + rows1[:, x1] * wx
    out = top_row * (1 - wy) + bottom_row * wy
    return np.ascontiguousarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
