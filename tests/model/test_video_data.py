"""The call protocol on clip folders: which frames are references and targets."""

import pytest

from face_folders import write_clips
from fsrst.video_data import (Clip, list_clips, other_clip_references, protocol_positions,
                              video_evaluation_samples)


def clip_of(seconds, fps=25.0, step=4):
    frames = [(i, f"{i}.png") for i in range(0, int(seconds * fps), step)]
    return Clip("c", "p", fps, frames)


def times(clip, positions):
    return [round(clip.time_s(p), 3) for p in positions]


def test_a_long_clip_has_references_at_0_1_6_3_2_s_and_targets_from_5_s_to_the_end():
    clip = clip_of(20.0)             # kept frames every 0.16 s, last at 19.84 s
    refs, targets = protocol_positions(clip)
    assert times(clip, refs) == [0.0, 1.6, 3.2]
    assert len(targets) == 10
    # The kept frame nearest 5 s is 4.96 s.
    assert times(clip, targets)[0] == 4.96 and times(clip, targets)[-1] == 19.84
    assert targets == sorted(set(targets))


def test_a_short_clip_has_the_same_layout_shrunk_to_its_length():
    clip = clip_of(3.5)              # last kept frame at 3.36 s: stretch 0.48
    refs, targets = protocol_positions(clip)
    assert times(clip, refs) == [0.0, 0.8, 1.6]
    assert len(targets) == 10 and not set(targets) & set(refs)
    assert min(times(clip, targets)) >= 2.24 and max(times(clip, targets)) == 3.36


def test_samples_and_another_persons_references(tmp_path):
    root = write_clips(tmp_path, clips=3, seconds=8.0, fps=10.0,
                       people=["ann", "ann", "bob"])
    clips = list_clips(root)
    assert [c.name for c in clips] == ["clip0", "clip1", "clip2"]
    samples = video_evaluation_samples(root)
    assert len(samples) == 30
    assert all(refs.shape == (3, 1, 128, 128) for _, refs, _ in samples)
    others = other_clip_references(samples, clips)
    by_clip = {c: refs for _, refs, c in samples}
    # clip0's next clip is ann's too: the donor is the next one of another person.
    assert others[0] is by_clip[2]
    assert others[10] is by_clip[2]
    assert others[20] is by_clip[0]


def test_one_person_has_no_other_persons_references(tmp_path):
    root = write_clips(tmp_path, clips=2, people=["ann", "ann"])
    with pytest.raises(ValueError, match="clips of two people"):
        other_clip_references(video_evaluation_samples(root), list_clips(root))


def test_the_kept_frames_rate_is_fps_over_their_step(tmp_path):
    write_clips(tmp_path / "clips", clips=1, seconds=4.0, fps=25.0, step=4)
    assert list_clips(str(tmp_path / "clips"))[0].kept_fps() == pytest.approx(6.25)
