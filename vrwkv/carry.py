"""Bi-WKV state carried between the windows of a long clip (the paper's "RNN mode").

A block in window i gets the past state (kernels/state.py) and the frame before the window
from window i-1 in this model call, and the future state from window i+1 in the previous
call (denoising step): what it sees of window i+k is k steps old, and nothing at a run's
first step.
"""

from dataclasses import dataclass, field

import torch

from ..kernels.state import bi_wkv_window, future_state, past_state
from .blocks import time_shift


@dataclass
class FrameCarry:
    """One block's carry in one window: what it receives (past, future, prev), what it hands
    on (out_*); next_start / prev_end: where the neighbours begin / end, in this window's frames."""

    past: tuple | None = None
    future: tuple | None = None
    prev: dict = field(default_factory=dict)       # name -> (V, 1, H, W, C) frame before the window
    next_start: int | None = None
    prev_end: int | None = None
    out_past: tuple | None = None
    out_future: tuple | None = None
    out_prev: dict = field(default_factory=dict)

    def shift(self, name: str, x: torch.Tensor, pad: str = "zero") -> torch.Tensor:
        """time_shift of feature `name` from the carried frame (none: `pad`); keeps the next window's."""
        if self.next_start is not None:
            self.out_prev[name] = x[:, self.next_start - 1:self.next_start].detach().clone()  # not a view: frees x
        return time_shift(x, self.prev.get(name), pad)

    def mix(self, w, u, k, v, frame_tokens: int) -> torch.Tensor:
        """bi_wkv of the window's k, v (V, L, C) with the carried states; keeps the states to hand on."""
        y = bi_wkv_window(w, u, k, v, self.past, self.future)
        w, k, v = w.detach(), k.detach(), v.detach()
        if self.next_start is not None:
            self.out_past = past_state(w, k, v, self.next_start * frame_tokens, self.past)
        if self.prev_end is not None:
            self.out_future = future_state(w, k, v, self.prev_end * frame_tokens, self.future)
        return y


class CarryStore:
    """The states handed between windows, per conditioning (`key`, so prompts run in separate
    calls keep their own): ("past", block, i) from window i-1 in this model call, with the
    frame before window i (freed when read), and ("future", block, i) from window i+1."""

    def __init__(self):
        self.states = {}

    def reset(self) -> None:
        """A new sampling run: the states of the last run belong to another trajectory."""
        self.states = {}

    def empty(self) -> bool:
        return not any(self.states.values())

    def begin(self, key) -> None:
        self.states.setdefault(key, {})

    def release(self, key) -> None:
        """Drops everything held for `key` (a call that did not finish)."""
        self.states.pop(key, None)

    def carry(self, key, block: str, window: int, start: int, end: int, windows: list) -> FrameCarry:
        table = self.states[key]
        past, prev = table.pop(("past", block, window), (None, {}))
        has_next, has_prev = window + 1 < len(windows), window > 0
        return FrameCarry(past=past, future=table.get(("future", block, window)), prev=prev,
                          next_start=windows[window + 1][0] - start if has_next else None,
                          prev_end=windows[window - 1][1] - start if has_prev else None)

    def hand_on(self, key, block: str, window: int, carry: FrameCarry) -> None:
        if carry.out_past is not None:
            self.states[key][("past", block, window + 1)] = (carry.out_past, carry.out_prev)
        if carry.out_future is not None:
            self.states[key][("future", block, window - 1)] = carry.out_future


@dataclass
class WindowContext:
    """The window being run, as the VRWKV patch sees it (transformer_options["vrwkv_window"]);
    `carry(block)` is None when windows do not carry. `anchors` is shared by the windows of
    one model call."""

    index: int
    windows: list
    store: CarryStore | None
    key: tuple
    carries: dict = field(default_factory=dict)
    anchors: dict = field(default_factory=dict)

    def frame_anchors(self, attention: tuple, k: torch.Tensor, v: torch.Tensor, frames: int) -> tuple:
        """((keys, values) of the clip's first frame, (keys, values) of the frame before this
        window or (None, None)), (videos, 1, tokens, C) each, for the cross-frame attention
        `attention`. Each window keeps what the windows after it read: the first, frame 0; every
        one, the frame before the next window (windows run in order within a call)."""
        grids = [t.detach().unflatten(0, (-1, frames)) for t in (k, v)]
        if self.index == 0:
            self.anchors[attention, "first"] = tuple(g[:, :1].clone() for g in grids)
        if self.index + 1 < len(self.windows):
            at = self.windows[self.index + 1][0] - 1 - self.windows[self.index][0]
            self.anchors[attention, self.index + 1] = tuple(g[:, at:at + 1].clone() for g in grids)
        return self.anchors[attention, "first"], self.anchors.pop((attention, self.index), (None, None))

    def carry(self, block: str) -> FrameCarry | None:
        if self.store is None:
            return None
        start, end = self.windows[self.index]
        self.carries[block] = self.store.carry(self.key, block, self.index, start, end, self.windows)
        return self.carries[block]

    def hand_on(self) -> None:
        """After the window's model call: its blocks' states go to their neighbours."""
        for block, carry in self.carries.items():
            self.store.hand_on(self.key, block, self.index, carry)
