"""CartPole frames and episode GIFs (Pillow writes them; no optional OpenCV encoder needed)."""

import io

import numpy as np
from PIL import Image

from labkit.rl.render import encode_gif


def test_a_gif_loops_forever_and_holds_its_last_frame():
    frames = [np.full((12, 16, 3), 40 * i, dtype=np.uint8) for i in range(4)]
    gif = Image.open(io.BytesIO(encode_gif(frames, fps=20, hold_last_s=1.0)))
    assert gif.n_frames == 4 and gif.info["loop"] == 0
    durations = []
    for k in range(gif.n_frames):
        gif.seek(k)
        durations.append(gif.info["duration"])
        # each frame's colour comes through (one flat colour: the palette holds it exactly)
        assert np.array(gif.convert("RGB"))[0, 0].tolist() == [40 * k] * 3
    assert durations == [50, 50, 50, 1000]
