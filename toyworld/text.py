"""A tiny text encoder for toy-world captions: learned word plus position embeddings,
(B, TOKENS, width). The empty caption (all padding) is classifier-free guidance's uncond."""

import torch
from torch import nn

from .world import COLOURS, SHAPES, SIZES

VOCAB = ("<pad>", "a", *SIZES, *COLOURS, *SHAPES)
TOKENS = 4


def tokenize(caption: str) -> list:
    """Word ids of a caption such as "a large red circle", padded to TOKENS."""
    words = caption.lower().split()
    unknown = [w for w in words if w not in VOCAB[1:]]
    if unknown:
        raise ValueError(f"caption {caption!r} has words outside the toy vocabulary: {unknown}; "
                         f"use words from {VOCAB[1:]}")
    if len(words) > TOKENS:
        raise ValueError(f"caption {caption!r} has {len(words)} words; at most {TOKENS}")
    return [VOCAB.index(w) for w in words] + [0] * (TOKENS - len(words))


class TextEncoder(nn.Module):
    def __init__(self, width: int = 64):
        super().__init__()
        self.width = width
        self.words = nn.Embedding(len(VOCAB), width)
        self.positions = nn.Parameter(torch.zeros(TOKENS, width))
        self.norm = nn.LayerNorm(width)

    def forward(self, captions: list) -> torch.Tensor:
        ids = torch.tensor([tokenize(c) for c in captions], device=self.positions.device)
        return self.norm(self.words(ids) + self.positions)
