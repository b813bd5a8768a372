"""Cross-rank plumbing for the FLAM losses: the autograd-aware ring and small gathers.

The ring (the FLAM paper, §3.3): each rank scores its local frames against the text block it holds,
then passes that block (embeddings, α, β) to rank + 1 and receives rank − 1's with
``batch_isend_irecv``. The pass is an autograd Function whose backward sends the gradient
back the other way, so every text block's gradient reaches the rank that owns its text tower
activations. After G − 1 hops every rank has seen every block; no rank ever holds all frames ×
all texts (one block's logits at a time, recomputed in backward when checkpointing is on).

With ``group=None`` and no initialised process group everything degrades to one process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _active(group) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def world_size(group=None) -> int:
    return dist.get_world_size(group) if _active(group) else 1


def rank(group=None) -> int:
    return dist.get_rank(group) if _active(group) else 0


def _global(group, r: int) -> int:
    return r if group is None else dist.get_global_rank(group, r)


def all_gather_plain(tensor: torch.Tensor, group=None) -> torch.Tensor:
    """[G, *shape] stack of every rank's tensor (no gradient)."""
    if not _active(group):
        return tensor.detach()[None]
    tensor = tensor.detach().contiguous()
    bool_input = tensor.dtype == torch.bool
    if bool_input:  # gloo has no bool collectives
        tensor = tensor.to(torch.uint8)
    out = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, tensor, group=group)
    result = torch.stack(out)
    return result.bool() if bool_input else result


def all_reduce_plain(tensor: torch.Tensor, group=None) -> torch.Tensor:
    tensor = tensor.detach().clone()
    if _active(group):
        dist.all_reduce(tensor, group=group)
    return tensor


def canonical_slots(all_ids: torch.Tensor) -> torch.Tensor:
    """[G, C] True for a valid slot whose id appears on no earlier rank (first owner wins)."""
    world = all_ids.shape[0]
    canonical = all_ids >= 0
    for r in range(1, world):
        earlier = all_ids[:r].reshape(-1)
        canonical[r] &= ~torch.isin(all_ids[r], earlier[earlier >= 0])
    return canonical


def _exchange(send: torch.Tensor, to: int, source: int, group) -> torch.Tensor:
    received = torch.empty_like(send)
    ops = [dist.P2POp(dist.isend, send, _global(group, to), group),
           dist.P2POp(dist.irecv, received, _global(group, source), group)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received


class _RingPass(torch.autograd.Function):
    """Forward: send to rank + 1, receive from rank − 1. Backward: the reverse."""

    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        world, me = dist.get_world_size(group), dist.get_rank(group)
        ctx.next, ctx.prev = (me + 1) % world, (me - 1) % world
        return _exchange(tensor.contiguous(), ctx.next, ctx.prev, group)

    @staticmethod
    def backward(ctx, grad):
        return _exchange(grad.contiguous(), ctx.prev, ctx.next, ctx.group), None


def ring_pass(tensor: torch.Tensor, group=None) -> torch.Tensor:
    """The block held by rank − 1 (differentiable: gradients go back to their owner)."""
    if not _active(group):
        return tensor
    return _RingPass.apply(tensor, group)


class _AllGatherGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.rows = tensor.shape[0]
        out = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(out, tensor.contiguous(), group=group)
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)  # every rank's loss depends on every slice
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None


def all_gather_grad(tensor: torch.Tensor, group=None) -> torch.Tensor:
    """Concatenate every rank's rows; backward returns the summed gradient of our rows."""
    if not _active(group):
        return tensor
    return _AllGatherGrad.apply(tensor, group)


def all_reduce_gradients(parameters, group=None) -> None:
    """Sum gradients over ranks (the ranks' losses are shares of one loss), one flat buffer."""
    if not _active(group):
        return
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    for p in params:  # a parameter unused on this rank still takes part
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, group=group)
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n
