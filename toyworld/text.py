"""A tiny text encoder for toy-world captions: learned word plus position embeddings,
(B, tokens, width). The empty caption (all padding) is classifier-free guidance's uncond.
Each world has its vocabulary (worlds.py); VOCAB and TOKENS here are the flat world's."""

import torch
from torch import nn

from .world import COLOURS, SHAPES, SIZES

VOCAB = ("<pad>", "a", *SIZES, *COLOURS, *SHAPES)
TOKENS = 4


def tokenize(caption: str, vocab: tuple = VOCAB, tokens: int = TOKENS) -> list:
    """Word ids of a caption such as "a large red circle", padded to `tokens`."""
    words = caption.lower().split()
    unknown = [w for w in words if w not in vocab[1:]]
    if unknown:
        raise ValueError(f"caption {caption!r} has words outside the toy vocabulary: {unknown}; "
                         f"use words from {vocab[1:]}")
    if len(words) > tokens:
        raise ValueError(f"caption {caption!r} has {len(words)} words; at most {tokens}")
    return [vocab.index(w) for w in words] + [0] * (tokens - len(words))


class TextEncoder(nn.Module):
    def __init__(self, width: int = 64, vocab: tuple = VOCAB, tokens: int = TOKENS):
        super().__init__()
        self.width, self.vocab, self.tokens = width, tuple(vocab), tokens
        self.words = nn.Embedding(len(vocab), width)
        self.positions = nn.Parameter(torch.zeros(tokens, width))
        self.norm = nn.LayerNorm(width)

    def forward(self, captions: list) -> torch.Tensor:
        ids = torch.tensor([tokenize(c, self.vocab, self.tokens) for c in captions], device=self.positions.device)
        return self.norm(self.words(ids) + self.positions)
