"""examples/prepare_frames.py: crops, the call protocol's picks, sizes, and its errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "examples", "prepare_frames.py")
sys.path.insert(0, os.path.join(ROOT, "examples"))

import prepare_frames  # noqa: E402


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def write_clip(folder, count, fps=25.0, step=4, size=(160, 120)):
    """A clip folder as shared/data/video has them: <index>.png and clip.json. Frame
    <index> is filled with grey level index % 256, so a pick can be read back."""
    os.makedirs(folder)
    for n in range(count):
        index = n * step
        Image.new("RGB", size, (index % 256,) * 3).save(os.path.join(folder, f"{index}.png"))
    with open(os.path.join(folder, "clip.json"), "w") as f:
        json.dump({"fps": fps}, f)


def level(path):
    return int(round(np.asarray(Image.open(path).convert("L"), dtype=np.float64).mean()))


def test_clip_picks_follow_the_call_protocol(tmp_path):
    # 10 s at 25 fps, every 4th frame kept: references nearest 0, 1.6 and 3.2 s are
    # frames 0, 40 and 80; 8 frames evenly from 5 s (frame 125) to the end (frame 248).
    write_clip(tmp_path / "clip", 63)
    result = run(str(tmp_path / "clip"), "--out_dir", str(tmp_path / "out"), "--truth")
    assert result.returncode == 0, result.stderr
    refs = sorted(os.listdir(tmp_path / "out" / "references"))
    frames = sorted(os.listdir(tmp_path / "out" / "frames"))
    assert refs == ["ref_0.jpg", "ref_1.jpg", "ref_2.jpg"]
    assert frames == [f"frame_{i:03d}.jpg" for i in range(8)]
    assert sorted(os.listdir(tmp_path / "out" / "truth")) == frames
    assert [level(tmp_path / "out" / "references" / r) for r in refs] == [0, 40, 80]
    expected = [124, 144, 160, 176, 196, 212, 232, 248]  # nearest kept frames to 5..9.92 s
    assert [level(tmp_path / "out" / "frames" / f) for f in frames] == expected
    assert "wrote 3 references and 8 frames" in result.stdout


def test_sizes_are_what_the_server_takes(tmp_path):
    write_clip(tmp_path / "clip", 20)
    assert run(str(tmp_path / "clip"), "--out_dir", str(tmp_path / "out"), "--frames", "5",
               "--truth").returncode == 0
    for name in os.listdir(tmp_path / "out" / "references"):
        assert Image.open(tmp_path / "out" / "references" / name).size == (128, 128)
    for name in os.listdir(tmp_path / "out" / "frames"):
        assert Image.open(tmp_path / "out" / "frames" / name).size == (32, 32)
        assert Image.open(tmp_path / "out" / "truth" / name).size == (128, 128)
        assert Image.open(tmp_path / "out" / "frames" / name).format == "JPEG"


def test_frame_is_the_bicubic_downscale_of_its_truth(tmp_path):
    rng = np.random.default_rng(3)
    photos = []
    for n in range(4):
        path = tmp_path / f"photo_{n}.png"
        # smooth content, so JPEG keeps it close
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(base).resize((256, 256), Image.BICUBIC).save(path)
        photos.append(str(path))
    assert run(*photos, "--out_dir", str(tmp_path / "out"), "--references", "2", "--frames", "2",
               "--truth", "--quality", "100").returncode == 0
    truth = Image.open(tmp_path / "out" / "truth" / "frame_001.jpg")
    frame = np.asarray(Image.open(tmp_path / "out" / "frames" / "frame_001.jpg"), np.float64)
    expected = np.asarray(truth.resize((32, 32), Image.BICUBIC), np.float64)
    assert np.abs(frame - expected).mean() < 2.0
    # and the truth is the photo itself (a square: the centre crop is all of it)
    source = np.asarray(Image.open(photos[3]).resize((128, 128), Image.LANCZOS), np.float64)
    assert np.abs(np.asarray(truth, np.float64) - source).mean() < 2.0


def test_photo_list_references_first_frames_after(tmp_path):
    photos = []
    for n in range(6):
        path = tmp_path / f"{n}.png"
        Image.new("RGB", (140, 140), (n * 40,) * 3).save(path)
        photos.append(str(path))
    assert run(*photos, "--out_dir", str(tmp_path / "out"), "--frames", "3").returncode == 0
    refs = [level(tmp_path / "out" / "references" / f"ref_{i}.jpg") for i in range(3)]
    frames = [level(tmp_path / "out" / "frames" / f"frame_{i:03d}.jpg") for i in range(3)]
    # 6 photos spread over the protocol's 7 s: at 0, 1.4, 2.8, 4.2, 5.6 and 7 s. The
    # references are the nearest to 0, 1.6 and 3.2 s; the three frames are what is left
    # (the nearest free photos to 5, 6 and 7 s), in order.
    assert refs == [0, 40, 80]
    assert frames == [120, 160, 200]
    assert not set(refs) & set(frames)


def test_centre_crop_takes_the_middle_square():
    image = Image.new("RGB", (300, 100), (255, 0, 0))
    image.paste((0, 0, 255), (100, 0, 200, 100))  # blue middle square
    face = prepare_frames.crop_to_reference(image, "centre", None)
    assert face.size == (128, 128)
    assert np.asarray(face)[:, :, 2].min() > 200 and np.asarray(face)[:, :, 0].max() < 60


def test_face_box_is_cut_the_way_the_training_data_was():
    # box 100 px at (200, 150): square of 180 px, centre (250, 200 - 5) -> (160, 105)
    assert prepare_frames.face_square((200, 150, 100, 100), 640, 480) == (160, 105, 180)
    # near the corner it moves to stay inside the picture
    assert prepare_frames.face_square((0, 0, 100, 100), 640, 480) == (0, 0, 180)
    # never larger than the picture's shorter side
    assert prepare_frames.face_square((10, 10, 300, 300), 640, 400) == (0, 0, 400)


def test_face_box_flag_crops_around_it(tmp_path):
    image = Image.new("RGB", (640, 480), (0, 0, 0))
    image.paste((255, 255, 255), (160, 105, 340, 285))  # exactly the crop of the box below
    path = tmp_path / "p.png"
    image.save(path)
    result = run(*[str(path)] * 4, "--out_dir", str(tmp_path / "out"), "--references", "1",
                 "--frames", "3", "--face_box", "200,150,100,100")
    assert result.returncode == 0, result.stderr
    assert level(tmp_path / "out" / "references" / "ref_0.jpg") == 255


@pytest.mark.parametrize("args, message", [
    (["--frames", "0"], "--frames: expected at least 1, got 0"),
    (["--references", "0"], "--references: expected at least 1, got 0"),
    (["--quality", "101"], "--quality: expected 1 to 100, got 101"),
    (["--frames", "8"], "--references 3 and --frames 8 need 11 pictures; the input has 5"),
    (["--face_box", "1,2,3"], "--face_box: expected X,Y,W,H (four integers), got '1,2,3'"),
    (["--face_box", "1,2,0,5"], "--face_box: expected a width and height above 0, got 0x5"),
])
def test_bad_arguments_name_the_flag_and_the_expected_value(tmp_path, args, message):
    write_clip(tmp_path / "clip", 5)
    result = run(str(tmp_path / "clip"), "--out_dir", str(tmp_path / "out"), *args)
    assert result.returncode == 1
    assert f"prepare_frames: error: {message}" in result.stderr


def test_missing_input_and_unreadable_image(tmp_path):
    result = run(str(tmp_path / "nope.png"), "--out_dir", str(tmp_path / "out"))
    assert result.returncode == 1
    assert f"{tmp_path / 'nope.png'}: no such file or folder" in result.stderr
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    result = run(*[str(bad)] * 4, "--out_dir", str(tmp_path / "out"), "--references", "1",
                 "--frames", "3")
    assert result.returncode == 1
    assert f"{bad}: not an image PIL can read" in result.stderr


def run_without_opencv(*args):
    """The script run by a python where `import cv2` fails, as on a machine without it."""
    code = ("import runpy, sys; sys.modules['cv2'] = None; "
            f"sys.argv = {[SCRIPT, *args]!r}; runpy.run_path({SCRIPT!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_video_or_detect_without_opencv_says_what_to_install(tmp_path):
    video = tmp_path / "call.avi"
    video.write_bytes(b"\x00" * 16)
    result = run_without_opencv(str(video), "--out_dir", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "apt-get install python3-opencv" in result.stderr
    write_clip(tmp_path / "clip", 20)
    result = run_without_opencv(str(tmp_path / "clip"), "--out_dir", str(tmp_path / "out"),
                                "--crop", "detect")
    assert result.returncode == 1
    assert "apt-get install python3-opencv" in result.stderr


def write_video(path, seconds, fps=25.0, size=(160, 120)):
    """A Motion-JPEG AVI whose frame n is filled with grey level n % 256."""
    import cv2
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for n in range(int(seconds * fps)):
        writer.write(np.full((size[1], size[0], 3), n % 256, np.uint8))
    writer.release()


def test_video_picks_follow_the_call_protocol(tmp_path):
    # 10 s at 25 fps: references nearest 0, 1.6 and 3.2 s are frames 0, 40 and 80; the 8
    # frames are the nearest to 5 s ... the last frame (249), evenly spaced.
    write_video(tmp_path / "call.avi", 10)
    result = run(str(tmp_path / "call.avi"), "--out_dir", str(tmp_path / "out"), "--truth")
    assert result.returncode == 0, result.stderr
    refs = [level(tmp_path / "out" / "references" / f"ref_{i}.jpg") for i in range(3)]
    frames = [level(tmp_path / "out" / "truth" / f"frame_{i:03d}.jpg") for i in range(8)]
    assert all(abs(got - want) <= 2 for got, want in zip(refs, [0, 40, 80])), refs
    expected = [125 + round(i * (249 - 125) / 7) for i in range(8)]
    assert all(abs(got - want) <= 2 for got, want in zip(frames, expected)), (frames, expected)
    assert "wrote 3 references and 8 frames" in result.stdout


def test_an_unreadable_video_is_named(tmp_path):
    video = tmp_path / "call.mp4"
    video.write_bytes(b"\x00" * 4096)
    result = run(str(video), "--out_dir", str(tmp_path / "out"))
    assert result.returncode == 1
    assert str(video) in result.stderr and "prepare_frames: error:" in result.stderr


def test_detect_crops_around_the_face_the_way_training_data_was_cut(tmp_path):
    # A real face (a shipped sample's 128x128 truth, at 256x256) on a grey 640x480 picture:
    # the cascade's box lies on it, and the reference is cut by the training rule around it.
    face = Image.open(os.path.join(ROOT, "examples", "people", "voxceleb2-00373", "truth",
                                   "frame_000.jpg")).resize((256, 256), Image.LANCZOS)
    picture = Image.new("RGB", (640, 480), (90, 90, 90))
    picture.paste(face, (300, 150))
    box = prepare_frames.detect_face(picture)
    assert box is not None
    x, y, w, h = box
    assert 300 <= x and x + w <= 556 and 150 <= y and y + h <= 406 and w >= 100, box
    reference = prepare_frames.crop_to_reference(picture, "detect", None)
    left, top, side = prepare_frames.face_square(box, 640, 480)
    expected = picture.crop((left, top, left + side, top + side)).resize((128, 128),
                                                                         Image.LANCZOS)
    assert np.array_equal(np.asarray(reference), np.asarray(expected))
    # and a picture with no face says what to do instead
    with pytest.raises(prepare_frames.PrepareError, match="no face found"):
        prepare_frames.crop_to_reference(Image.new("RGB", (640, 480), (90, 90, 90)), "detect",
                                         None)


def test_shipped_samples_are_complete():
    people = os.path.join(ROOT, "examples", "people")
    names = sorted(os.listdir(people))
    assert 3 <= len(names) <= 4
    licences = open(os.path.join(ROOT, "examples", "LICENSES.md")).read()
    total = 0
    for name in names:
        assert f"people/{name}" in licences  # every person's source and licence is named
        folder = os.path.join(people, name)
        refs = sorted(os.listdir(os.path.join(folder, "references")))
        frames = sorted(os.listdir(os.path.join(folder, "frames")))
        assert len(refs) == 3 and 5 <= len(frames) <= 10
        assert sorted(os.listdir(os.path.join(folder, "truth"))) == frames
        for ref in refs:
            assert min(Image.open(os.path.join(folder, "references", ref)).size) >= 128
        for frame in frames:
            assert Image.open(os.path.join(folder, "frames", frame)).size == (32, 32)
        for root, _, files in os.walk(folder):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    assert total < 1_000_000
