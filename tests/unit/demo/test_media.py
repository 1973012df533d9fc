"""The demo video's plan: which picture is on screen when, and crop windows that stay inside the picture."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from conveyor.demo.media import HEIGHT, WIDTH, Scene, _window, make_demo_video, scene_plan

# (height, width) of the skimage pictures the plan uses.
SHAPES = {"astronaut": (512, 512), "coffee": (400, 600), "rocket": (427, 640), "chelsea": (300, 451)}


@pytest.mark.parametrize("seconds", [1, 2, 3, 4, 6, 9])
def test_scene_plan_opens_on_the_astronaut_and_fills_the_video(seconds: int) -> None:
    scenes = scene_plan(seconds)
    assert sum(s.seconds for s in scenes) == seconds
    assert scenes[0].picture == "astronaut"
    if seconds >= 2:
        assert scenes[-1].picture != "astronaut"


@pytest.mark.parametrize("seconds", [0, -1])
def test_scene_plan_rejects_empty_videos(seconds: int) -> None:
    with pytest.raises(ValueError, match="seconds"):
        scene_plan(seconds)


def test_make_demo_video_rejects_bad_fps_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fps"):
        make_demo_video(tmp_path / "v.mp4", seconds=2, fps=0)
    assert not (tmp_path / "v.mp4").exists()


@pytest.mark.parametrize("scene", scene_plan(9), ids=lambda s: s.picture)
@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_windows_are_16_9_and_inside_the_picture(scene: Scene, progress: float) -> None:
    height, width = SHAPES[scene.picture]
    picture = SimpleNamespace(shape=(height, width, 3))  # _window only looks at the shape
    left, top, w, h = _window(picture, scene, progress)
    assert 0 <= left <= width - w
    assert 0 <= top <= height - h
    assert abs(w / h - WIDTH / HEIGHT) < 0.02
