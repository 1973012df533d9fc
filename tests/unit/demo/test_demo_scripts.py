"""The video-process demo's scripts, run as host processes under the supervisor's env contract.

Each script gets what a job gets (INPUT_FILE_PATH, TMP_INPUT_DIR, TMP_OUTPUT_DIR, STORAGE_OBJECT_KEY,
JOB_UUID) and `python3` on PATH is this interpreter, which must have the `demo` extra installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.demo.media import HEIGHT, WIDTH, expected_frame_count, make_demo_video

for _module in ("numpy", "skimage", "imageio_ffmpeg", "cv2"):
    pytest.importorskip(_module, reason="needs the demo extra: pip install -e '.[demo]'")

EXAMPLE_DIR = Path(__file__).resolve().parents[3] / "examples" / "video-process"
SECONDS = 4
FPS = 10


def run_script(script: str, input_file: Path, out_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run `script` as a job would: /bin/sh, env contract set, this interpreter's bin dir first in PATH."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(
        INPUT_FILE_PATH=str(input_file),
        TMP_INPUT_DIR=str(input_file.parent),
        TMP_OUTPUT_DIR=str(out_dir),
        STORAGE_OBJECT_KEY=f"in/{input_file.name}",
        JOB_UUID=f"test-{script}-{input_file.stem}",
    )
    return subprocess.run(["/bin/sh", str(EXAMPLE_DIR / script)], env=env, capture_output=True, text=True, timeout=120)


def check_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert proc.stdout.strip(), "a script must say what it did (stdout is the job log)"


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The frames extract-frames.sh wrote for a freshly generated SECONDS-long video."""
    base = tmp_path_factory.mktemp("video")
    video = make_demo_video(base / "in" / "clip.mp4", seconds=SECONDS, fps=FPS)
    proc = run_script("extract-frames.sh", video, base / "frames")
    check_ok(proc)
    return base / "frames"


def detect(frame: Path, out_dir: Path) -> dict[str, object]:
    """Run detect-faces.sh on `frame`, check both outputs exist, return the parsed JSON."""
    check_ok(run_script("detect-faces.sh", frame, out_dir))
    annotated = out_dir / f"{frame.stem}-annotated.jpg"
    assert annotated.is_file() and annotated.stat().st_size > 0
    assert annotated.read_bytes()[:2] == b"\xff\xd8", "annotated output is not a JPEG"
    report = json.loads((out_dir / f"{frame.stem}.json").read_text())
    assert report["frame"] == frame.name
    assert (report["width"], report["height"]) == (WIDTH, HEIGHT)
    assert report["count"] == len(report["faces"])
    assert all(len(box) == 4 and all(isinstance(v, int) for v in box) for box in report["faces"])
    return report


def test_extract_frames_writes_one_jpeg_per_second(frames_dir: Path) -> None:
    names = sorted(p.name for p in frames_dir.iterdir())
    count = expected_frame_count(SECONDS, FPS)
    assert names == [f"clip-{i:04d}.jpg" for i in range(1, count + 1)]


def test_detect_faces_finds_the_astronaut(frames_dir: Path, tmp_path: Path) -> None:
    # The video opens on the astronaut (see conveyor.demo.media.scene_plan).
    report = detect(frames_dir / "clip-0001.jpg", tmp_path)
    assert report["count"] >= 1


def test_detect_faces_finds_nobody_in_the_last_frame(frames_dir: Path, tmp_path: Path) -> None:
    last = sorted(frames_dir.iterdir())[-1]  # coffee/rocket/cat: no human face
    report = detect(last, tmp_path)
    assert report["count"] == 0


def test_detect_faces_fails_on_a_file_that_is_not_an_image(tmp_path: Path) -> None:
    bogus = tmp_path / "in" / "notes.jpg"
    bogus.parent.mkdir()
    bogus.write_text("not a picture")
    proc = run_script("detect-faces.sh", bogus, tmp_path / "out")
    assert proc.returncode != 0
    assert "cannot read an image" in proc.stderr


def test_extract_frames_fails_on_a_file_that_is_not_a_video(tmp_path: Path) -> None:
    bogus = tmp_path / "in" / "clip.mp4"
    bogus.parent.mkdir()
    bogus.write_text("not a video")
    proc = run_script("extract-frames.sh", bogus, tmp_path / "out")
    assert proc.returncode != 0


def test_expected_frame_count_rejects_empty_videos() -> None:
    with pytest.raises(ValueError, match="seconds"):
        expected_frame_count(0)
