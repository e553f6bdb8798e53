"""Video helpers run under ComfyUI's Python (PyAV comes with ComfyUI):
    video_tools.py write PATH FRAMES SIZE FPS   # moving shapes, H.264 mp4
    video_tools.py info PATH                    # {"frames", "width", "height"} as JSON
"""

import json
import sys

import av
import numpy as np


def frame(t: int, frames: int, size: int) -> np.ndarray:
    """A red disc and a blue square crossing a green-yellow gradient."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.3 + 0.4 * x, 0.6 - 0.2 * y, 0.2 + 0 * x], axis=-1)
    p = t / max(frames - 1, 1)
    disc = (x - (0.2 + 0.6 * p)) ** 2 + (y - 0.35) ** 2 < 0.02
    img[disc] = (0.9, 0.15, 0.1)
    sq = (abs(x - (0.8 - 0.6 * p)) < 0.12) & (abs(y - 0.7) < 0.12)
    img[sq] = (0.1, 0.2, 0.9)
    return (img * 255).astype(np.uint8)


def write(path, frames, size, fps):
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame(t, frames, size), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def info(path):
    with av.open(path) as f:
        decoded = [fr for fr in f.decode(video=0)]
    return {"frames": len(decoded), "width": decoded[0].width, "height": decoded[0].height}


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        print(json.dumps(info(sys.argv[2])))
