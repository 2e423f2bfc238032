"""A call's frames as a video stream delivers them: encoded with H.264 (libx264, 4:2:0) as one
sequence, and decoded again. Uses the ffmpeg command (Debian's ffmpeg; tools/install_deps.sh).

Unlike JPEG, each frame but the first is predicted from the ones before it, so its artifacts
depend on motion and on the stream's rate control (here constant quality, x264's CRF).
"""

import shutil
import subprocess
from typing import List, Tuple

from PIL import Image

MIN_CRF, MAX_CRF = 0, 51  # x264's constant-quality scale: 0 lossless, 51 worst


def h264_round_trip(frames: List[Image.Image], crf: int, fps: float) -> Tuple[List[Image.Image], int]:
    """Encodes `frames` (RGB, all one even size) as one H.264 stream at `fps` with x264's
    CRF `crf` (preset medium, yuv420p), decodes it, and returns the decoded frames and the
    stream's size in bytes."""
    if not MIN_CRF <= crf <= MAX_CRF:
        raise ValueError(f"crf: expected {MIN_CRF} to {MAX_CRF}, got {crf}")
    if not frames:
        raise ValueError("frames: expected at least one frame, got none")
    width, height = frames[0].size
    if width % 2 or height % 2 or any(f.size != (width, height) for f in frames):
        raise ValueError(f"frames: expected one even size for all, got "
                         f"{sorted({f.size for f in frames})}")
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg: not installed (apt-get install ffmpeg; tools/install_deps.sh)")
    raw = b"".join(f.convert("RGB").tobytes() for f in frames)
    size = f"{width}x{height}"
    encode = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "rawvideo",
              "-pix_fmt", "rgb24", "-s", size, "-r", f"{fps:g}", "-i", "pipe:0",
              "-c:v", "libx264", "-preset", "medium", "-crf", str(crf), "-pix_fmt", "yuv420p",
              "-f", "h264", "pipe:1"]
    stream = subprocess.run(encode, input=raw, capture_output=True, check=True).stdout
    decode = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "h264", "-i", "pipe:0",
              "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    decoded = subprocess.run(decode, input=stream, capture_output=True, check=True).stdout
    frame_bytes = width * height * 3
    if len(decoded) != frame_bytes * len(frames):
        raise RuntimeError(f"ffmpeg: decoded {len(decoded) // frame_bytes} frames of "
                           f"{len(frames)}")
    out = [Image.frombytes("RGB", (width, height), decoded[i:i + frame_bytes])
           for i in range(0, len(decoded), frame_bytes)]
    return out, len(stream)
