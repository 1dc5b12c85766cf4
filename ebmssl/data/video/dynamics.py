"""Stochastic moving-item dynamics with K discrete plausible moves per step, and their rendering.

A clip shows ``num_items`` (1 or 2) small grayscale items on a black ``canvas x canvas`` frame for
``frames`` steps. Item 0 is the *agent*: at every step it takes one of K moves (``MOVES[:K]``: right,
left, down, up, then the diagonals), chosen uniformly and independently; the choice is the step's
*action*. A move shifts the item by ``speed`` pixels; a move that would leave the canvas is reflected at
the wall (``position -> -position`` below 0, ``2 * limit - position`` above ``limit``). Item 1, when
present, is a *distractor* moving at a constant diagonal velocity that bounces off the walls: it does not
depend on the actions. So, given frame t, the next frame is exactly one of K renders (one per move; at a
wall two moves can reflect onto the same render), each with probability 1 / K: log K nats of
uncertainty per step, all carried by the action.

Randomness is counter-based: every random number of sample ``index`` of split ``split`` is a hash of
(seed, split, index, slot) (SplitMix64), so a sample is a pure function of those coordinates whatever
else is generated, in whatever order, by however many processes.
"""

from __future__ import annotations

import numpy as np
import torch

# (dy, dx) of the K moves, in order: K = 4 uses the four axis directions, K = 8 adds the diagonals
MOVES = torch.tensor([[0, 1], [0, -1], [1, 0], [-1, 0], [1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=torch.int64)
MAX_CHOICES = len(MOVES)
DIAGONALS = torch.tensor([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=torch.int64)

# slots of the per-sample random stream (each a disjoint range of counters)
SLOT_ITEM, SLOT_START, SLOT_CHOICE, SLOT_VELOCITY = 0, 16, 32, 1024
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele et al. 2014) on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        return x ^ (x >> np.uint64(31))


def random_integers(seed: int, split: int, indices: torch.Tensor, slot: int, count: int, high: int) -> torch.Tensor:
    """(len(indices), count) int64 in [0, high): the hash of (seed, split, index, slot + j) modulo ``high``.

    A pure function of its arguments (the modulo bias is below 2^-50 for the small ``high`` used here)."""
    if high < 1:
        raise ValueError(f"high must be >= 1, got {high}")
    index = indices.to(torch.int64).numpy().astype(np.uint64)[:, None]
    counter = np.uint64(slot) + np.arange(count, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        key = _splitmix64(_splitmix64(np.uint64(seed) & _MASK) ^ np.uint64(split))
        x = _splitmix64(_splitmix64(key ^ index) ^ counter)
    return torch.from_numpy((x % np.uint64(high)).astype(np.int64))


def reflect(position: torch.Tensor, limit: int) -> torch.Tensor:
    """Reflect coordinates into [0, limit] at the walls (one reflection: |move| <= limit)."""
    position = torch.where(position < 0, -position, position)
    return torch.where(position > limit, 2 * limit - position, position)


def agent_step(position: torch.Tensor, choice: torch.Tensor, speed: int, limit: int) -> torch.Tensor:
    """The agent's next top-left corner (..., 2) after move ``choice`` (...,): ``reflect(p + speed * MOVES[c])``."""
    return reflect(position + speed * MOVES.to(position.device)[choice], limit)


def distractor_step(position: torch.Tensor, velocity: torch.Tensor, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One constant-velocity step with elastic bounces: the new position and velocity (sign flipped at a wall)."""
    moved = position + velocity
    bounced = (moved < 0) | (moved > limit)
    return reflect(moved, limit), torch.where(bounced, -velocity, velocity)


def trajectories(
    seed: int, split: int, indices: torch.Tensor, frames: int, num_items: int, num_choices: int, canvas: int,
    item_size: int, speed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions (n, frames, num_items, 2) (top-left (y, x)), actions (n, frames - 1) and the distractor's
    velocity at every frame (n, frames, 2): the one that takes frame t to t + 1 (zeros without a distractor)."""
    if not 1 <= num_choices <= MAX_CHOICES:
        raise ValueError(f"num_choices must be in [1, {MAX_CHOICES}], got {num_choices}")
    limit = canvas - item_size
    if limit < 2 * speed:
        raise ValueError(f"canvas {canvas} leaves {limit} px of room for items of {item_size} px: need >= 2 * speed = {2 * speed}")
    n = indices.numel()
    start = random_integers(seed, split, indices, SLOT_START, 2 * num_items, limit + 1).view(n, num_items, 2)
    actions = random_integers(seed, split, indices, SLOT_CHOICE, frames - 1, num_choices)
    velocity = torch.zeros(n, 2, dtype=torch.int64)
    if num_items > 1:
        velocity = speed * DIAGONALS[random_integers(seed, split, indices, SLOT_VELOCITY, 1, len(DIAGONALS))[:, 0]]
    positions, velocities = [start], [velocity]
    for t in range(frames - 1):
        current = positions[-1]
        items = [agent_step(current[:, 0], actions[:, t], speed, limit)]
        if num_items > 1:
            moved, velocity = distractor_step(current[:, 1], velocity, limit)
            items.append(moved)
        positions.append(torch.stack(items, dim=1))
        velocities.append(velocity)
    return torch.stack(positions, dim=1), actions, torch.stack(velocities, dim=1)


def render(items: torch.Tensor, positions: torch.Tensor, canvas: int) -> torch.Tensor:
    """uint8 frames (..., 1, canvas, canvas): each item (..., M, s, s) pasted at its top-left corner
    (..., M, 2); overlapping items combine by the pixel-wise maximum."""
    lead, (num_items, size) = positions.shape[:-2], items.shape[-3:-1]
    flat_items = items.reshape(-1, num_items, size, size)
    flat_positions = positions.reshape(-1, num_items, 2)
    rows = flat_positions[..., 0, None, None] + torch.arange(size).view(size, 1)  # (B, M, s, 1)
    cols = flat_positions[..., 1, None, None] + torch.arange(size).view(1, size)  # (B, M, 1, s)
    target = (rows * canvas + cols).reshape(flat_items.shape[0], -1)  # (B, M * s * s)
    frames = torch.zeros(flat_items.shape[0], canvas * canvas, dtype=torch.uint8)
    frames = frames.scatter_reduce(1, target, flat_items.reshape(flat_items.shape[0], -1), reduce="amax")
    return frames.view(*lead, 1, canvas, canvas)


def candidate_next_positions(positions: torch.Tensor, velocity: torch.Tensor, num_choices: int, speed: int, limit: int) -> torch.Tensor:
    """(n, K, M, 2): for frame positions (n, M, 2), the positions of the next frame under each of the K moves
    (the distractor, if any, moves the same way in all of them). ``velocity``: the distractor's velocity
    at that frame (n, 2), ``velocities[:, t]`` of :func:`trajectories`."""
    n, num_items = positions.shape[:2]
    choices = torch.arange(num_choices).expand(n, num_choices)
    agent = agent_step(positions[:, None, 0].expand(n, num_choices, 2), choices, speed, limit)
    out = [agent]
    if num_items > 1:
        moved, _ = distractor_step(positions[:, 1], velocity, limit)
        out.append(moved[:, None].expand(n, num_choices, 2))
    return torch.stack(out, dim=2)
