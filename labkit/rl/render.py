"""Pictures of an agent at work: CartPole frames drawn with OpenCV, episodes as GIFs.

CartPole's observation *is* its state ``(x, ẋ, θ, θ̇)``: cart position (m), cart velocity,
pole angle (rad, 0 = upright, positive = leaning right) and angular velocity. A frame is
drawn from the state alone, so no display, pygame or ``render_mode`` is needed, and an episode
recorded as states can be drawn again at any size. Explained in notebooks/30_rl_basics.py.

    episode = play_episode(policy, seed=0)            # states [T + 1, 4], actions [T], rewards [T]
    frames = episode_frames(episode, label="trained")  # T + 1 frames, RGB uint8 [H, W, 3]
    gif = encode_gif(frames[::2], fps=25)              # bytes: IPython.display.Image(gif)
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch

from labkit.rl.envs import make_env

__all__ = ["Episode", "play_episode", "cartpole_frame", "episode_frames", "encode_gif", "save_gif"]

# CartPole-v1's geometry and limits (gymnasium.envs.classic_control.cartpole).
X_LIMIT = 2.4  # |x| > 2.4 m ends the episode
THETA_LIMIT = 12 * np.pi / 180  # |θ| > 12° ends the episode
POLE_LENGTH = 1.0  # m (the env's `length` is half of it)

# Colours, RGB.
BACKGROUND = (255, 255, 255)
TRACK = (90, 90, 90)
CART = (40, 40, 40)
POLE = (204, 153, 102)
AXLE = (127, 127, 204)
LIMIT = (214, 39, 40)
TEXT = (20, 20, 20)
PUSH = (31, 119, 180)


class Episode(NamedTuple):
    """One episode: ``states`` [T + 1, 4] (the last one is where it ended), ``actions`` [T]
    (0 = push left, 1 = push right), ``rewards`` [T], and whether it hit the time limit."""

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    truncated: bool

    @property
    def total_return(self) -> float:
        return float(self.rewards.sum())


def play_episode(
    policy: Callable[[torch.Tensor], torch.Tensor],
    env_id: str = "CartPole-v1",
    seed: int = 0,
    max_steps: int | None = None,
) -> Episode:
    """Run ``policy`` for one episode and record every state.

    Args:
        policy: observations ``[N, 4]`` float32 → actions ``[N]`` (called with N = 1), e.g.
            ``lambda obs: q_net(obs).argmax(-1)`` for a greedy DQN agent.
        seed: the environment's seed: the same seed gives the same start state.
        max_steps: stop after this many steps (``None``: the env's own limit, 500); a stop
            there counts as truncated.
    """
    env = make_env(env_id, seed=seed)
    obs, _ = env.reset(seed=seed)
    states, actions, rewards = [obs], [], []
    truncated = False
    with torch.no_grad():
        while max_steps is None or len(actions) < max_steps:
            action = int(policy(torch.as_tensor(obs, dtype=torch.float32)[None])[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            states.append(obs)
            actions.append(action)
            rewards.append(reward)
            if terminated or truncated:
                break
        else:
            truncated = True  # stopped by max_steps, not by the pole
    env.close()
    return Episode(
        np.asarray(states, dtype=np.float32),
        np.asarray(actions, dtype=np.int64),
        np.asarray(rewards, dtype=np.float32),
        bool(truncated),
    )


def cartpole_frame(
    state: Sequence[float],
    *,
    width: int = 480,
    height: int = 240,
    action: int | None = None,
    caption: str = "",
) -> np.ndarray:
    """Draw one CartPole state; returns an RGB uint8 image ``[height, width, 3]``.

    The track spans the full width (x from -2.4 to 2.4 m, red marks at the ends); the dashed
    red lines at the cart show the ±12° the pole may lean before the episode ends; an arrow
    shows the push the agent chose in this state (``action``).
    """
    x, _, theta, _ = (float(v) for v in state)
    frame = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    scale = width / (2 * X_LIMIT * 1.1)  # pixels per metre, with a margin beyond the limits
    track_y = int(height * 0.78)
    centre_x = width / 2
    cart_w, cart_h = int(0.5 * scale), int(0.3 * scale)
    cart_x = int(round(centre_x + x * scale))
    aa = cv2.LINE_AA

    cv2.line(frame, (0, track_y), (width, track_y), TRACK, 2, aa)
    for side in (-1, 1):  # the track's ends: the episode stops when the cart's centre passes them
        end = int(round(centre_x + side * X_LIMIT * scale))
        cv2.line(frame, (end, track_y - 12), (end, track_y + 12), LIMIT, 3, aa)
    top = track_y - cart_h
    cv2.rectangle(frame, (cart_x - cart_w // 2, top), (cart_x + cart_w // 2, track_y), CART, -1, aa)

    axle = np.array([cart_x, top], dtype=float)
    pole_px = POLE_LENGTH * scale
    for side in (-1, 1):  # the failure angle, dashed
        tip = axle + 0.9 * pole_px * np.array([np.sin(side * THETA_LIMIT), -np.cos(THETA_LIMIT)])
        for a, b in ((0.15, 0.3), (0.45, 0.6), (0.75, 0.9)):
            p, q = axle + a / 0.9 * (tip - axle), axle + b / 0.9 * (tip - axle)
            cv2.line(frame, _pt(p), _pt(q), LIMIT, 1, aa)
    tip = axle + pole_px * np.array([np.sin(theta), -np.cos(theta)])
    cv2.line(frame, _pt(axle), _pt(tip), POLE, max(3, int(0.08 * scale)), aa)
    cv2.circle(frame, _pt(axle), max(3, int(0.05 * scale)), AXLE, -1, aa)

    if action is not None:  # an arrow under the cart: which way the agent pushes
        direction = 1 if action == 1 else -1
        y = track_y + int(0.1 * height)
        start = (cart_x - direction * cart_w // 3, y)
        end = (cart_x + direction * cart_w // 2 + direction * 12, y)
        cv2.arrowedLine(frame, start, end, PUSH, 3, aa, tipLength=0.35)
    if caption:
        cv2.putText(frame, caption, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, TEXT, 1, aa)
    return frame


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))


def episode_frames(
    episode: Episode, *, label: str = "", every: int = 1, width: int = 480, height: int = 240
) -> list[np.ndarray]:
    """Frames of ``episode`` (every ``every``-th state and the last one), captioned with the
    step, the return so far and ``label``."""
    steps = list(range(0, len(episode.states), every))
    if steps[-1] != len(episode.states) - 1:
        steps.append(len(episode.states) - 1)  # always show how it ended
    frames = []
    for t in steps:
        done = t == len(episode.states) - 1
        action = None if done else int(episode.actions[t])
        ending = (" (time limit)" if episode.truncated else " (fell)") if done else ""
        caption = f"{label}  step {t}  return {episode.rewards[:t].sum():.0f}{ending}".strip()
        frames.append(
            cartpole_frame(
                episode.states[t], width=width, height=height, action=action, caption=caption
            )
        )
    return frames


def encode_gif(frames: Sequence[np.ndarray], fps: float = 25, hold_last_s: float = 1.0) -> bytes:
    """Frames (RGB uint8 ``[H, W, 3]``) → an endlessly looping GIF, as bytes.

    Show it with ``IPython.display.Image(data=gif)``. The last frame is held ``hold_last_s``
    seconds, so the end of the episode can be read before the loop starts again.
    """
    if not frames:
        raise ValueError("encode_gif needs at least one frame")
    from PIL import Image  # Pillow: GIF writing without OpenCV's optional encoder

    images = [Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8)) for f in frames]
    duration = max(int(round(1000 / fps)), 20)  # ms; browsers slow down frames under 20 ms
    durations = [duration] * (len(frames) - 1) + [max(duration, int(1000 * hold_last_s))]
    # One adaptive palette per frame (Pillow's default for RGB frames): the few colours of a
    # CartPole drawing come through exactly, grey lines stay grey.
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0
    )
    return buffer.getvalue()


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float = 25) -> Path:
    """:func:`encode_gif` written to ``path`` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_gif(frames, fps))
    return path
