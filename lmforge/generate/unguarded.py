"""Compiled decode steps on a CPU without dynamo's guards, the model checked once per run instead.

Before every call of a compiled function, dynamo evaluates its guards (for a decoder, ~1,000:
every module attribute, parameter, buffer and argument the trace read) and inductor's wrapper
asserts each input's size and stride. For the 6 x 384 model of `benchmarks/gguf_llamacpp.py`
that was about a fifth of a compiled fp32 step on 2 cores (torch.profiler: "TorchDynamo Cache
Lookup" 89-178 us and the wrapper's ~140-160 us, against a 0.7-1.8 ms kernel). A decode step's inputs
change only between runs, so, as vLLM's compiled models dispatch without dynamo's guards:

- `compile_unguarded` compiles a copy of the step per shape it runs (its own code object, so its
  own dynamo cache), with every guard filtered out (`torch.compiler.skip_all_guards_unsafe`) and
  inductor's `size_asserts` off; the caller picks the copy by its shape (`steps_for`);
- `steps_for` checks the model once per run: its `signature` (each module's type, hooks and
  patched `forward`; each parameter's and buffer's shape, stride, dtype and device) must be the one
  the copies were compiled for, or they are dropped and compiled again — what dynamo would
  have recompiled for. The weights' values may change (a fine-tune after loading): the graph reads
  them at every call.
"""

from __future__ import annotations

import torch
import torch.nn as nn

UNGUARDED = {"guard_filter_fn": torch.compiler.skip_all_guards_unsafe, "size_asserts": False}


def compile_unguarded(fn, name: str):
    """`fn` compiled for static shapes, without guards, in a frame of its own named `name` (see the
    module doc): every call must come with the shapes, dtypes and model its first call had."""
    def step(*args):
        return fn(*args)
    # a code object of its own, so a dynamo cache of its own (a wrapped `fn`, e.g. under
    # torch.no_grad(), would otherwise share the one frame torch.compile puts around wrappers)
    step.__code__ = step.__code__.replace(co_name=name, co_qualname=name)
    return torch.compile(step, fullgraph=True, dynamic=False, options=UNGUARDED)


def dynamic_keys(key_valid: torch.Tensor, most: int) -> torch.Tensor:
    """`key_valid` (B, S) for a step compiled with S as a dynamic size (2..most): one graph for every
    number of slots attended to. A tensor of its own (Dynamo would tie a view's size to its
    base's); the cache it attends into must hold more than `most` slots, or S could be the whole
    cache's size, which Dynamo specialises on (`decode.DecodeState.total`, `serve.rows.RowCache`)."""
    own = key_valid.clone() if key_valid._base is not None else key_valid
    torch._dynamo.mark_dynamic(own, 1, min=2, max=most)
    return own


def signature(model: nn.Module) -> tuple:
    """What a step compiled without guards depends on besides its arguments: each module's type,
    hooks and patched `forward`, each parameter's and buffer's shape, stride, dtype and device.
    The KV caches are left out: a run sets them up for its shape, which picks the copy."""
    hooks = nn.modules.module
    modules = tuple((name, type(m), len(m._forward_hooks), len(m._forward_pre_hooks), id(m.__dict__.get("forward")))
                    for name, m in model.named_modules() if "kv_cache" not in name)
    tensors = tuple((name, t.shape, t.stride(), t.dtype, t.device)
                    for name, t in (*model.named_parameters(), *model.named_buffers()) if "kv_cache" not in name)
    return modules, tensors, len(hooks._global_forward_hooks), len(hooks._global_forward_pre_hooks)


def steps_for(model: nn.Module, attribute: str) -> dict:
    """The model's compiled copies by shape (kept in `model.<attribute>`), emptied when the model's
    `signature` is no longer the one they were compiled for. Called once per run."""
    now = signature(model)
    steps = model.__dict__.get(attribute)
    if steps is None or model.__dict__.get(attribute + "_signature") != now:
        steps = model.__dict__[attribute] = {}
        model.__dict__[attribute + "_signature"] = now
    return steps
