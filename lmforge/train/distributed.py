"""Several processes, one loop: how the model is laid out over the processes torchrun starts.

Launch with `torchrun --nproc_per_node N -m lmforge train ... --strategy S` (gloo on CPU,
NCCL on GPU; add `--nnodes M --node-rank R --rdzv-endpoint HOST:PORT` for several machines).
Rank 0 logs and writes the model directory; every rank computes its share of each step's
micro-batches. The strategies (`--strategy`):

    none   one process (what `auto` means without torchrun)
    ddp    DistributedDataParallel: every rank holds the whole model, its gradients and the
           optimizer state; gradients are all-reduced (`auto` under torchrun)
    fsdp   FSDP2: `fully_shard` on every block, then on the root, which keeps the embeddings,
           the final norm and a tied output head in one group. Parameters, gradients and
           optimizer state are split along their first dimension over the ranks (any number of
           blocks works with any number of ranks: a tensor with fewer rows than ranks leaves
           some ranks an empty shard); each group is all-gathered just before it runs and freed
           after. bf16 parameters with fp32 gradient reduction on GPU (`MixedPrecisionPolicy`),
           fp32 on CPU. Checkpoints are `torch.distributed.checkpoint` directories written by
           every rank (see `checkpoint.py`).

`activation_checkpointing(model)` recomputes each block's activations in the backward pass
(non-reentrant `torch.utils.checkpoint`), with any strategy.
"""

from __future__ import annotations

import contextlib
import os
import types
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.nn as nn

from ..errors import ConfigError

STRATEGIES = ("auto", "ddp", "fsdp")


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_type: str, strategy: str = "auto") -> DistInfo:
    """Join the process group when started by torchrun (with --strategy ddp / fsdp also for a
    single process); a no-op for one process started without torchrun."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if strategy != "auto" and not launched_by_torchrun():
        raise ConfigError(f"--strategy {strategy} spreads training over processes started by torchrun; launch with "
                          f"`torchrun --nproc_per_node N -m lmforge train ...`, or drop --strategy for one process")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and strategy == "auto":
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return info


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world_size
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def blocks_of(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of any family (an encoder-decoder has both stacks'), in order."""
    from ..model.blocks import Block
    return [m for m in model.modules() if isinstance(m, Block)]


# ---- activation checkpointing -------------------------------------------------------------------
def activation_checkpointing(model: nn.Module) -> int:
    """Recompute every block's activations in backward instead of keeping them (non-reentrant
    `torch.utils.checkpoint`); only while training with gradients on. Returns the number of blocks.
    Called before sharding, so FSDP's hooks wrap the checkpointed forward (as torchtitan does)."""
    from torch.utils.checkpoint import checkpoint
    blocks = blocks_of(model)
    for block in blocks:
        forward = block.forward

        def checkpointed(self, *args, _forward=forward, **kwargs):
            if self.training and torch.is_grad_enabled():
                return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
            return _forward(*args, **kwargs)
        block.forward = types.MethodType(checkpointed, block)
    return len(blocks)


# ---- strategies -----------------------------------------------------------------------------------
class Strategy:
    """One process: the loop's model is the model itself."""

    name = "none"
    sharded = False        # parameters and optimizer state split over the ranks (checkpoints are DCP directories)

    def __init__(self, info: DistInfo, device: torch.device):
        self.info, self.device = info, device

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the loop calls (before the optimizer is built: FSDP replaces the parameters)."""
        return model

    def micro_batch(self, train_model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Around one micro-batch's forward and backward; `last`: the step's last one."""
        return contextlib.nullcontext()

    def full_params(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """Every rank holds the whole model inside (for evaluation, samples and reports, which call
        methods other than forward and may run on rank 0 alone). Every rank must enter it."""
        return contextlib.nullcontext()

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The whole model's state dict on rank 0 (every rank must call it; others get {})."""
        return model.state_dict() if self.info.is_main else {}


class DDPStrategy(Strategy):
    name = "ddp"

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel as DDP
        return DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def micro_batch(self, train_model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if last else train_model.no_sync()      # all-reduce once per step


class FSDPStrategy(Strategy):
    """FSDP2. Gradients are reduce-scattered after every micro-batch (no `no_sync`: accumulating
    unsharded gradients would cost the memory FSDP saves)."""

    name = "fsdp"
    sharded = True

    def __init__(self, info: DistInfo, device: torch.device, mixed_precision: bool):
        super().__init__(info, device)
        self.mixed_precision = mixed_precision
        self.root: nn.Module | None = None

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        # an explicit mesh on the training device: without it FSDP2 would put CPU training on a GPU (pytorch#132471)
        mesh = init_device_mesh(self.device.type, (self.info.world_size,))
        mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if self.mixed_precision
              else MixedPrecisionPolicy())
        # the tasks slice logits (a view) but never modify them in place, which is what this warns about
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
        for block in blocks_of(model):
            fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=True)
        # the root group: embeddings, final norm, heads; a tied embedding / head is one parameter in it
        fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=False)
        self.root = model
        return model

    @contextlib.contextmanager
    def full_params(self, model: nn.Module) -> Iterator[None]:
        from torch.distributed.fsdp import FSDPModule
        groups = [m for m in model.modules() if isinstance(m, FSDPModule)]
        model.set_reshard_after_forward(False)            # keep what is gathered here until the end
        for m in groups:
            m.unshard()
        try:
            yield
        finally:
            for m in groups:
                m.reshard()
                m.set_reshard_after_forward(m is not model, recurse=False)
            if hasattr(model, "reset_iter_state"):    # torch >= 2.12 (the GPU machine has 2.11: no such call)
                model.reset_iter_state()  # forget the forward order seen here (it may differ between ranks)

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def make_strategy(name: str, info: DistInfo, device: torch.device, mixed_precision: bool) -> Strategy:
    """`auto`: DDP under torchrun with several processes, else one process."""
    if name == "fsdp":
        return FSDPStrategy(info, device, mixed_precision)
    if name == "ddp" or (name == "auto" and info.enabled):
        return DDPStrategy(info, device)
    return Strategy(info, device)


def optimizer_state_by_name(model: nn.Module, optimizer: torch.optim.Optimizer,
                            state: dict[str, Any]) -> dict[str, Any]:
    """An `optimizer.state_dict()` saved by a DDP or one-process run (parameters numbered in the
    optimizer's order) keyed by parameter name instead, as `set_optimizer_state_dict` takes it.
    The optimizer here must have been built the same way (same groups, same order)."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    saved_groups = state["param_groups"]
    if sum(len(g["params"]) for g in saved_groups) != len(order):
        raise ConfigError("the checkpoint's optimizer state does not match this model's parameters; resume with "
                          "the same model, LoRA and freezing settings as the run started with")
    groups = [{**g, "params": [order[i] for i in g["params"]]} for g in saved_groups]
    return {"state": {order[i]: s for i, s in state["state"].items()}, "param_groups": groups}
