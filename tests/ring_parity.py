"""Ring-vs-single-process parity check on CPU (gloo), a helper of tests/test_train.py.

``check_parity(world)`` spawns ``world`` gloo processes on this machine, shards one fixed batch
of the debug model, runs the ring loss with backward, sums the gradients over ranks and
compares the summed loss and every parameter gradient with one process computing the whole
batch. Returns the worst relative errors.
"""

from __future__ import annotations

import os
import sys
import tempfile

import torch

# A fixed batch: descriptions repeated across shards (dedup over ranks), a description that is
# positive in one clip and a negative query of another, clips with nothing but negatives.
PARITY_LABELS = [
    {"dog barks": [[1.0, 2.5]], "rain": [[0.0, 10.0]]},
    {"cat meows": [[0.3, 1.1]], "Dog  barks": [[5.0, 6.0]]},
    {},
    {"bell rings": [[3.0, 9.0]], "dog barks": [[0.0, 0.4]]},
    {"car horn": [[7.5, 8.0]]},
    {"rain": [[2.0, 4.0]], "cat meows": [[9.0, 10.0]]},
]
PARITY_NEGATIVES = [["car horn"], ["bell rings", "siren"], ["siren"], ["wind"], ["dog barks"],
                    ["thunder"]]
# Descriptions that fit a clip without labelling it: left out for that clip, whether the text
# sits on the same rank ("cat meows" for clip 0) or only on another ("thunder" for clip 2).
PARITY_UNLABELLED = [["cat meows"], [], ["rain", "thunder"], [], ["bell rings"], ["dog barks"]]


def _batch(model, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    n = len(PARITY_LABELS)
    return 0.1 * torch.randn(n, model.window_samples, generator=generator)


def _model():
    from flamcli.models.registry import build_debug_model

    return build_debug_model().eval()  # eval: BatchNorm statistics must not depend on shards


def _loss(global_loss: str):
    from flamcli.training.losses import FlamLoss, LossConfig

    return FlamLoss(LossConfig(global_loss=global_loss))


def full_computation(global_loss: str = "sigmoid"):
    from flamcli.training.batch import loss_inputs
    from flamcli.training.losses import build_text_slots

    model, loss_fn = _model(), _loss(global_loss)
    waves = _batch(model)
    slots = build_text_slots(PARITY_LABELS, PARITY_NEGATIVES, model.frames_per_window,
                             model.config.frontend.window_seconds, unlabelled=PARITY_UNLABELLED)
    out = loss_fn(loss_inputs(model, waves, slots), model.logit_scale_a)
    out.total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    if loss_fn.global_bias.grad is not None:
        grads["loss.global_bias"] = loss_fn.global_bias.grad.clone()
    return out.total.detach(), grads


def _worker(rank: int, world: int, rendezvous: str, global_loss: str, result_path: str):
    import torch.distributed as dist

    from flamcli.training.batch import loss_inputs
    from flamcli.training.losses import build_text_slots
    from flamcli.training.ring import all_reduce_gradients, all_reduce_plain

    torch.set_num_threads(1)
    # A rendezvous file rather than a probed free TCP port, which another process could take
    # before every rank has bound it.
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world)
    try:
        model, loss_fn = _model(), _loss(global_loss)
        waves = _batch(model)
        per = len(PARITY_LABELS) // world
        part = slice(rank * per, (rank + 1) * per)
        slots = build_text_slots(PARITY_LABELS[part], PARITY_NEGATIVES[part],
                                 model.frames_per_window, model.config.frontend.window_seconds,
                                 unlabelled=PARITY_UNLABELLED[part])
        out = loss_fn(loss_inputs(model, waves[part], slots), model.logit_scale_a)
        out.total.backward()
        params = list(model.parameters()) + [loss_fn.global_bias]
        all_reduce_gradients(params)
        total = all_reduce_plain(out.total.detach())
        if rank == 0:
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            if global_loss == "sigmoid":
                grads["loss.global_bias"] = loss_fn.global_bias.grad.clone()
            torch.save({"loss": total, "grads": grads}, result_path)
        dist.barrier()  # every rank has finished its exchanges; rank 0's result is on disk
    except BaseException:
        dist.destroy_process_group()
        raise
    # Leave without tearing gloo down: under a busy test run its transport threads aborted the
    # process at destruction ("terminate called without an active exception", SIGABRT; three
    # times in about a dozen test runs, even after a barrier), which mp.spawn reports as a
    # failure.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def check_parity(world: int, global_loss: str = "sigmoid", full=None) -> dict:
    """Loss error and, per parameter, (‖Δg‖, ‖g‖) of the ring against one process.

    ``full`` is a cached :func:`full_computation` result. Gradients that are analytically zero
    (attention key biases) are float noise (~1e-7) in both runs, so compare with
    ``‖Δg‖ ≤ rtol·‖g‖ + 1e-6``.
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ring.pt")
        mp.spawn(_worker, args=(world, os.path.join(tmp, "rendezvous"), global_loss, path),
                 nprocs=world, join=True)
        ring = torch.load(path, weights_only=True)
    loss, grads = full if full is not None else full_computation(global_loss)
    missing = sorted(set(grads) ^ set(ring["grads"]))
    errors = {}
    for name, g in grads.items():
        if name not in ring["grads"]:
            continue
        denom = g.norm().item()
        diff = (ring["grads"][name] - g).norm().item()
        errors[name] = (diff, denom)
    return {"loss": loss.item(), "ring_loss": ring["loss"].item(),
            "loss_error": abs(ring["loss"].item() - loss.item()) / abs(loss.item()),
            "grad_errors": errors, "missing": missing, "parameters": len(grads)}
