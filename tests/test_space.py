"""The Gradio Space (spaces/, fsm_hf/space_app.py): its logic, its API through gradio_client, a real
browser (headless Debian Chromium driven by Playwright), and a fresh virtual environment installed
from the Space's own requirements.txt.

A tiny random 4D pipeline stands in for the built-in model (``FSMSpace(builtin_model=...)``), so the
tests do not depend on the shipped model and stay fast.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import importlib.metadata as metadata  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from fsm_hf import FSMConfig, FSMForNovelViewSynthesis, FSMGaussianConfig, FSMForGaussianReconstruction  # noqa: E402
from fsm_hf.cameras import OPENGL_TO_OPENCV  # noqa: E402
from fsm_hf.pipeline_fsm import FSMPipeline  # noqa: E402
from fsm_hf.space_app import FSMSpace, SpaceError, SpaceLimits, build_demo, display_scale, launch  # noqa: E402
from fsm_hf.synthetic import generate_scene  # noqa: E402
from fsm_hf.video import export_to_video  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
SIZE = 32  # the tiny model's resolution
DISPLAY = SIZE * display_scale(SIZE, SIZE)  # rendered views come back upscaled for display
MIN_STD = 2.0  # a rendered view's pixel standard deviation (0-255) must exceed this: not a blank image


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random 4D FSM-LVSM pipeline folder (time convention "training", 4 input views)."""
    torch.manual_seed(0)
    model = FSMForNovelViewSynthesis(FSMConfig.from_preset("tiny", newton_schulz_dtype="float32")).eval()
    folder = tmp_path_factory.mktemp("space-model") / "tiny-fsm"
    FSMPipeline(model=model, num_input_views=4, time_convention="training").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def space(tiny_model_dir, tmp_path_factory) -> FSMSpace:
    return FSMSpace(builtin_model=tiny_model_dir, device="cpu", work_dir=tmp_path_factory.mktemp("space-work"))


@pytest.fixture(scope="module")
def server(space):
    """The app served in this process on a free local port; yields its URL."""
    demo = build_demo(space)
    _, url, _ = launch(demo, host="127.0.0.1", port=_free_port(), prevent_thread_lock=True, quiet=True)
    yield url.rstrip("/")
    demo.close()


@pytest.fixture
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


def _example_request(**overrides) -> dict:
    request = dict(
        model_source="builtin", model_name="", scene_source="example", seed=10_000, example_frames=16, video=None,
        camera_file=None, images=None, transforms=None, num_views=4, frame_selection="evenly", frame_stride=2,
        time_convention="auto",
    )  # fmt: skip
    request.update(overrides)
    return request


def _check_view(path, size: int = DISPLAY) -> np.ndarray:
    """A rendered view file: the expected size, and not blank."""
    with Image.open(path) as image:
        assert image.size == (size, size)
        array = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert array.std() > MIN_STD, f"blank render (pixel std {array.std():.2f})"
    return array


def _write_scene_files(folder: Path, num_frames: int = 6) -> dict:
    """A procedural clip on disk in three formats: nerfstudio images, official .jsonl + mp4, transforms + mp4."""
    scene = generate_scene(10_001, num_frames, SIZE, SIZE)
    frames = scene.frames
    folder.mkdir(parents=True, exist_ok=True)
    images, entries, official = [], [], []
    for i in range(num_frames):
        name = f"frame_{i:05d}.png"
        array = (frames.images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(folder / name)
        images.append(folder / name)
        c2w = frames.c2w[i].double()
        fx, fy, cx, cy = frames.fxfycxcy[i].tolist()
        entries.append({"file_path": f"images/{name}", "transform_matrix": (c2w @ OPENGL_TO_OPENCV).tolist(),
                        "time": float(frames.times[i])})  # fmt: skip
        official.append({"frame_idx": i, "w2c": torch.linalg.inv(c2w).tolist(), "fx": fx, "fy": fy, "cx": cx,
                         "cy": cy, "h": SIZE, "w": SIZE})  # fmt: skip
    transforms = {"fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": SIZE, "h": SIZE, "frames": entries}
    (folder / "transforms.json").write_text(json.dumps(transforms))
    video = export_to_video(frames.images, folder / "clip.mp4", fps=8)
    (folder / "clip.jsonl").write_text(json.dumps({"scene_name": "clip", "video_path": "clip.mp4", "frames": official}))
    return {"images": images, "transforms": folder / "transforms.json", "video": Path(video),
            "jsonl": folder / "clip.jsonl"}  # fmt: skip


# ----------------------------------------------------------------------------------------------
# The logic, without a server
# ----------------------------------------------------------------------------------------------
def test_core_package_does_not_need_gradio(tiny_model_dir):
    """gradio is imported by the app layer only: the package and the app's logic work without it."""
    code = (
        "import sys; sys.modules['gradio'] = None\n"
        "import fsm_hf, fsm_hf.pipeline_fsm, fsm_hf.space_app\n"
        f"space = fsm_hf.space_app.FSMSpace(builtin_model={str(tiny_model_dir)!r}, device='cpu')\n"
        "state, thumbs, _ = space.reconstruct('builtin', '', 'example', example_frames=8, num_views=2)\n"
        "print(space.render_view(state).size)\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith(f"({DISPLAY}, {DISPLAY})")


def test_orbit_sliders_move_the_camera_around_the_focus(space):
    state, thumbnails, status = space.reconstruct("builtin", "", "example", example_frames=16, num_views=4)
    assert len(thumbnails) == 4 and "4 input views" in status
    assert state.use_time and state.time_range == (0.0, 15.0) and state.time_convention == "training"

    def center(*args):
        return space.orbit_camera(state, *args).c2w[0, :3, 3].double()

    reference = center(0, 0, 1)
    assert torch.allclose(reference, state.reference, atol=1e-4)  # (0, 0, 1) is the reference input view
    radius = float((reference - state.focus).norm())
    assert float((center(0, 0, 2) - state.focus).norm()) == pytest.approx(2 * radius, rel=1e-4)
    assert float((center(90, 0, 1) - state.focus).norm()) == pytest.approx(radius, rel=1e-4)
    height = lambda c: float((c - state.focus) @ state.up)  # noqa: E731
    assert height(center(0, 30, 1)) > height(reference) > height(center(0, -30, 1))
    forward = space.orbit_camera(state, 45, 10, 1).c2w[0, :3, 2].double()  # looks at the focus
    to_focus = state.focus - center(45, 10, 1)
    assert torch.allclose(forward, to_focus / to_focus.norm(), atol=1e-4)

    first = np.asarray(space.render_view(state, 0, 0, 1, 3.0), dtype=np.float64)
    moved = np.asarray(space.render_view(state, 60, 0, 1, 3.0), dtype=np.float64)
    later = np.asarray(space.render_view(state, 0, 0, 1, 12.0), dtype=np.float64)
    assert first.shape == (DISPLAY, DISPLAY, 3) and first.std() > MIN_STD
    assert np.abs(first - moved).mean() > 0.5 and np.abs(first - later).mean() > 0.1


def test_clear_messages_for_missing_models_and_limits(space, tmp_path):
    missing = FSMSpace(builtin_model=tmp_path / "no-model", work_dir=tmp_path / "work")
    with pytest.raises(SpaceError, match="built-in demo model is not installed.*Local folder"):
        missing.reconstruct("builtin", "", "example")
    with pytest.raises(SpaceError, match="not an FSMPipeline folder"):
        space.reconstruct("local", str(tmp_path), "example")
    with pytest.raises(SpaceError, match="Hub model id like 'owner/name'"):
        space.reconstruct("hub", "not a repo id", "example")
    with pytest.raises(SpaceError, match="number of input views must be an integer between 1 and 16, got 20"):
        space.reconstruct("builtin", "", "example", example_frames=16, num_views=20)
    small = FSMSpace(builtin_model=space.builtin_model, limits=SpaceLimits(max_input_views=4), work_dir=tmp_path / "w2")
    with pytest.raises(SpaceError, match="gives 16 input views.*at most 4.*stride of at least 4"):
        small.reconstruct("builtin", "", "example", example_frames=16, frame_selection="all")
    with pytest.raises(SpaceError, match="press 'Reconstruct' first"):
        space.render_view(None)
    state, _, _ = space.reconstruct("builtin", "", "example", example_frames=8, num_views=2)
    with pytest.raises(SpaceError, match=r"range \[0, 7\], got 9"):
        space.render_view(state, 0, 0, 1, 9.0)
    with pytest.raises(SpaceError, match="needs a Gaussian model"):
        space.export_ply(state)


def test_gaussian_model_exports_ply(tmp_path):
    from plyfile import PlyData

    torch.manual_seed(0)
    config = FSMGaussianConfig.from_preset("tiny-lrm", newton_schulz_dtype="float32")
    folder = tmp_path / "tiny-lrm"
    FSMPipeline(model=FSMForGaussianReconstruction(config).eval(), num_input_views=4).save_pretrained(folder)
    lrm = FSMSpace(builtin_model=folder, device="cpu", work_dir=tmp_path / "work")
    state, _, _ = lrm.reconstruct("builtin", "", "example", example_frames=8, num_views=3)
    assert state.gaussian
    splat = PlyData.read(lrm.export_ply(state, 3.5))["vertex"]
    assert splat.count > 0 and {"x", "opacity", "scale_0", "rot_3"} <= {p.name for p in splat.properties}
    full = PlyData.read(lrm.export_ply(state, 3.5, full_4d=True))["vertex"]
    assert {"t", "scale_t", "rot_r_0"} <= {p.name for p in full.properties}


# ----------------------------------------------------------------------------------------------
# The API, through gradio_client
# ----------------------------------------------------------------------------------------------
def test_api_reconstructs_the_example_and_renders_views_and_videos(client):
    import imageio.v3 as iio

    gallery, status, time_slider = client.predict(**_example_request(), api_name="/reconstruct")
    assert len(gallery) == 4 and [item["caption"] for item in gallery] == ["t = 0", "t = 5", "t = 10", "t = 15"]
    assert "Reconstructed **4 input views**" in status and "time 0 to 15 (frames)" in status
    assert (time_slider["minimum"], time_slider["maximum"], time_slider["value"]) == (0.0, 15.0, 7.5)

    view = client.predict(azimuth=25, elevation=10, distance=1.2, time=6.5, api_name="/render_view")
    first = _check_view(view)
    other = _check_view(client.predict(azimuth=-40, elevation=0, distance=1.0, time=6.5, api_name="/render_view"))
    assert np.abs(first - other).mean() > 0.5  # the camera reached the server

    video = client.predict(
        trajectory="orbit", schedule="sweep", num_frames=6, fps=6, azimuth=0, elevation=0, distance=1, time=2,
        api_name="/render_video",
    )  # fmt: skip
    path = video["video"] if isinstance(video, dict) else video
    frames = iio.imread(path)
    assert frames.shape[0] == 6 and frames.shape[1:3] == (DISPLAY, DISPLAY)


def test_api_reads_uploaded_scenes_in_every_supported_form(client, tmp_path):
    from gradio_client import handle_file

    files = _write_scene_files(tmp_path / "clip")
    # Images + transforms.json (nerfstudio, OpenGL poses, per-frame times in [0, 1]).
    gallery, status, time_slider = client.predict(
        **_example_request(scene_source="images", images=[handle_file(p) for p in files["images"]],
                           transforms=handle_file(files["transforms"]), num_views=3),
        api_name="/reconstruct",
    )  # fmt: skip
    assert len(gallery) == 3 and "3 input views" in status and "6 images with transforms.json" in status
    assert (time_slider["minimum"], time_slider["maximum"]) == (0.0, 1.0)
    _check_view(client.predict(azimuth=10, elevation=0, distance=1, time=0.4, api_name="/render_view"))
    # Video + official FSM .jsonl (frame-index times).
    gallery, status, _ = client.predict(
        **_example_request(scene_source="video", video=handle_file(files["video"]),
                           camera_file=handle_file(files["jsonl"]), frame_selection="every", frame_stride=2),
        api_name="/reconstruct",
    )  # fmt: skip
    assert [item["caption"] for item in gallery] == ["t = 0", "t = 2", "t = 4"]
    _check_view(client.predict(azimuth=0, elevation=0, distance=1, time=3, api_name="/render_view"))
    # Video + transforms.json: the k-th frame entry takes the video's k-th frame.
    gallery, status, _ = client.predict(
        **_example_request(scene_source="video", video=handle_file(files["video"]),
                           camera_file=handle_file(files["transforms"]), frame_selection="all"),
        api_name="/reconstruct",
    )  # fmt: skip
    assert len(gallery) == 6 and "clip.mp4 with transforms.json (6 frames)" in status


def test_api_rejects_malformed_uploads_and_keeps_serving(client, tmp_path):
    from gradio_client import handle_file

    files = _write_scene_files(tmp_path / "clip", num_frames=4)
    corrupt = tmp_path / "bad" / "transforms.json"
    corrupt.parent.mkdir()
    corrupt.write_text('{"frames": [ {"file_path": "images/frame_00000.png", ')
    with pytest.raises(Exception, match="is not valid JSON"):
        client.predict(
            **_example_request(scene_source="images", images=[handle_file(files["images"][0])],
                               transforms=handle_file(corrupt)),
            api_name="/reconstruct",
        )  # fmt: skip
    text_video = tmp_path / "bad" / "notes.mp4"
    text_video.write_text("this is a text file, not a video\n" * 20)
    with pytest.raises(Exception, match="Could not read the video 'notes.mp4'"):
        client.predict(
            **_example_request(scene_source="video", video=handle_file(text_video),
                               camera_file=handle_file(files["transforms"])),
            api_name="/reconstruct",
        )  # fmt: skip
    unmatched = tmp_path / "bad" / "other.png"
    Image.new("RGB", (SIZE, SIZE)).save(unmatched)
    with pytest.raises(Exception, match="None of the 4 frames of 'transforms.json' matches an uploaded image"):
        client.predict(
            **_example_request(scene_source="images", images=[handle_file(unmatched)],
                               transforms=handle_file(files["transforms"])),
            api_name="/reconstruct",
        )  # fmt: skip
    with pytest.raises(Exception, match="between 1 and 16, got 40"):
        client.predict(**_example_request(num_views=40), api_name="/reconstruct")

    gallery, status, _ = client.predict(**_example_request(), api_name="/reconstruct")  # still serving
    assert len(gallery) == 4
    _check_view(client.predict(azimuth=5, elevation=5, distance=1, time=1, api_name="/render_view"))


# ----------------------------------------------------------------------------------------------
# A real browser
# ----------------------------------------------------------------------------------------------
def _save_artifact(path: Path) -> None:
    folder = os.environ.get("FSM_TEST_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


def _fetch_image(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=30) as response:
        return np.asarray(Image.open(response).convert("RGB"), dtype=np.float64)


def test_browser_reconstruct_then_move_time_and_camera(server, space, tmp_path):
    """Headless Chromium: reconstruct the example, change time and azimuth, render, check the image."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), "Debian chromium is required (.ci/run installs it: apt-get install chromium)"
    # What the page must end up showing: the default example (32 frames, 8 views) at azimuth 60, time 4.5,
    # computed here independently of the browser session.
    state, _, _ = space.reconstruct("builtin", "", "example", example_frames=32, num_views=8)
    expected = np.asarray(space.render_view(state, 60, 0, 1.0, 4.5), dtype=np.float64)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(server)
            page.locator("#fsm-reconstruct").click(timeout=60_000)
            view = page.locator("#fsm-view img")
            view.wait_for(timeout=120_000)  # reconstruct, then the first view renders by itself
            page.locator("#fsm-inputs img").first.wait_for(timeout=60_000)
            assert page.locator("#fsm-inputs img").count() >= 8  # 8 input views by default
            assert "Reconstructed" in page.locator("#fsm-status").inner_text()
            first_src = view.get_attribute("src")

            for slider, value in (("#fsm-time", "4.5"), ("#fsm-azimuth", "60")):
                box = page.locator(f"{slider} input[type=number]")
                box.fill(value)
                box.press("Enter")
            page.locator("#fsm-render").click()
            shown, deadline = None, time.monotonic() + 60
            while time.monotonic() < deadline:  # until the page shows the render of the new slider values
                src = view.get_attribute("src")
                if src and src != first_src:
                    shown = _fetch_image(src)
                    if shown.shape == expected.shape and np.abs(shown - expected).max() <= 1.0:
                        break
                page.wait_for_timeout(250)
            assert page.locator("#fsm-time input[type=number]").input_value() == "4.5"
            assert page.locator("#fsm-azimuth input[type=number]").input_value() == "60"
            element = tmp_path / "fsm-view.png"
            view.screenshot(path=str(element))
            shot = tmp_path / "fsm-space.png"
            page.screenshot(path=str(shot), full_page=True)
            _save_artifact(shot)
        finally:
            browser.close()
    assert not errors, errors
    assert shown is not None, "the rendered view never changed after moving the sliders"
    assert shown.shape == (DISPLAY, DISPLAY, 3) and shown.std() > MIN_STD
    assert np.abs(shown - expected).max() <= 1.0, "the page does not show the view of the slider values"
    assert np.asarray(Image.open(element).convert("RGB"), dtype=np.float64).std() > MIN_STD  # as displayed


# ----------------------------------------------------------------------------------------------
# The Space from a fresh virtual environment
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_space_builds_installs_and_serves_from_a_fresh_venv(tiny_model_dir, tmp_path):
    """build_space.py -> python -m venv -> pip install -r requirements.txt -> python app.py answers HTTP 200."""
    from gradio_client import Client

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1", GRADIO_ANALYTICS_ENABLED="False",
               HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")  # fmt: skip
    out = tmp_path / "space"
    build = subprocess.run(
        [sys.executable, str(REPO_ROOT / "spaces" / "build_space.py"), "--output-dir", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
    wheel_name = "fsm_hf-0.1.0-py3-none-any.whl"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "app.py", wheel_name, "requirements.txt"]
    lines = (out / "requirements.txt").read_text().splitlines()
    pins = dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))
    pins = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    assert pins["torch"] == "2.13.0" and lines[-1] == f"./{wheel_name}"
    for name in ("gradio", "numpy", "transformers", "diffusers", "accelerate", "huggingface-hub", "safetensors",
                 "pillow", "pyyaml", "tqdm", "imageio", "imageio-ffmpeg", "gsplat", "plyfile"):  # fmt: skip
        assert pins[name] == metadata.version(name), name
    with zipfile.ZipFile(out / wheel_name) as wheel:
        has_builtin = "fsm_hf/assets/fsm-demo/model_index.json" in wheel.namelist()
        assert "fsm_hf/space_app.py" in wheel.namelist()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=300)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "-r", "requirements.txt"], cwd=out, capture_output=True, text=True,
        env=env, timeout=1200,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]
    where = subprocess.run(
        [python, "-c", "import fsm_hf, gradio; print(fsm_hf.__file__)"], cwd=out, capture_output=True, text=True,
        env=env, timeout=300,
    )  # fmt: skip
    assert where.returncode == 0 and where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr

    port = _free_port()
    command = [python, "app.py", "--host", "127.0.0.1", "--port", str(port)]
    if not has_builtin:  # the lead's built-in model is not packaged yet: offer the tiny one in its place
        command += ["--builtin-model", str(tiny_model_dir)]
    log = (tmp_path / "app.log").open("w")
    process = subprocess.Popen(command, cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, status = time.monotonic() + 240, None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(url + "/", timeout=5) as response:
                    status = response.status
                    break
            except OSError:
                time.sleep(1)
        log_tail = (tmp_path / "app.log").read_text()[-3000:]
        assert status == 200, f"app did not answer (exit code {process.poll()}):\n{log_tail}"
        client = Client(url, verbose=False)
        gallery, _, _ = client.predict(**_example_request(example_frames=8, num_views=2), api_name="/reconstruct")
        assert len(gallery) == 2
        view = client.predict(azimuth=15, elevation=0, distance=1, time=3, api_name="/render_view")
        with Image.open(view) as image:
            assert np.asarray(image.convert("RGB"), dtype=np.float64).std() > MIN_STD
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
