"""Dense O(L^2) Bi-WKV straight from the definition, as a softmax
over i: the oracle every backend is tested against, gradients by autograd. Memory B*L*L*C."""

import torch


def bi_wkv_naive(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    L = k.shape[1]
    idx = torch.arange(L, device=k.device)
    dist = (idx[:, None] - idx[None, :]).abs().to(k.dtype)              # (t, i)
    logits = -(dist - 1)[None, :, :, None] * w + k[:, None, :, :]       # (B, t, i, C)
    self_mask = torch.eye(L, dtype=torch.bool, device=k.device)[None, :, :, None]
    logits = torch.where(self_mask, k[:, None, :, :] + u, logits)
    return (torch.softmax(logits, dim=2) * v[:, None, :, :]).sum(dim=2)
