"""Whether plain decoding runs its compiled step: `--compile` / `--no-compile` decide; left unset
(the default) a model on a CPU compiles once it has spent `AUTO_COMPILE_AFTER_S` seconds decoding
eagerly at one batch size in this process.

That is the rent-or-buy rule: compiling costs about as long (3 s with inductor's on-disk cache,
8 s without, for a 6 x 384 model on the 2-core anchor), so a run of calls spends at most about
twice what the better choice alone would have, and a process that decodes a lot — a chat, a loop
over prompts, an evaluation — goes on with the step that is 1.3-1.8x faster (docs/performance.md).
A single short `lmforge generate` stays eager. Every later call at that batch size reuses the
compiled step; if it turns out slower per token than the eager one (a long context makes the
compiled step's static cache costly), or it cannot be compiled here (no C++ compiler), the model
decodes eagerly again from then on; a model whose full-context cache would outweigh its weights
(a long window) is not compiled by default at all. On a GPU the default stays eager (CUDA graphs need
`--compile`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..model import inference_layout
from .core import GenerationConfig, compiled_decode_step, decode_one_token

# Seconds of eager decoding (one model, one batch size) after which the default compiles the step.
AUTO_COMPILE_AFTER_S = 5.0


@dataclass
class StepTimes:
    """One model's decoding at one shape (a batch size, and whether the cache rolls; the server's
    own shapes are its row counts): time and steps spent eagerly and compiled, counting only
    steps after a run's first (which, compiled, includes compiling)."""
    eager_s: float = 0.0            # every eager step, the first included: what the rule counts
    eager_steady_s: float = 0.0
    eager_steps: int = 0
    compiled_steady_s: float = 0.0
    compiled_steps: int = 0
    compiled: bool = False          # a compiled graph exists for this shape
    slower: bool = False            # ... and was measured slower than the eager step: not used again
    fits: bool | None = None        # `static_cache_fits` at this shape, once asked (it reads the state dict)


def step_times(model, shape: tuple) -> StepTimes:
    """What the default has measured of `model` at `shape` in this process."""
    table = model.__dict__.setdefault("_decode_times", {})
    return table.setdefault(shape, StepTimes())


def use_compiled_step(model, cfg: GenerationConfig, shape: tuple[int, bool], device: torch.device) -> bool:
    """Whether this run decodes with the compiled step (see the module doc)."""
    if cfg.compile is not None:
        return cfg.compile
    return default_compiles(model, shape, device)


def default_compiles(model, shape: tuple, device: torch.device) -> bool:
    """The default's choice at `shape` (its first element: the batch rows): the compiled step once
    the eager budget is spent, on a CPU, unless it failed or was slower, or its cache outweighs
    the weights."""
    if device.type != "cpu" or getattr(model, "_eager_only", False):
        return False
    times = step_times(model, shape)
    if times.slower:
        return False
    if times.compiled or times.eager_s < AUTO_COMPILE_AFTER_S:
        return times.compiled
    if times.fits is None:                      # asked once per shape: the server asks at every step
        times.fits = static_cache_fits(model, shape[0])
    return times.fits


def record_compiled(model, shape: tuple, steady_s: float, steps: int) -> bool:
    """Count compiled steps (after the first); True once the compiled step is measured slower than
    the eager one at this shape (over 8 steps or more): the default leaves it from then on."""
    times = step_times(model, shape)
    times.compiled = True
    times.compiled_steady_s += steady_s
    times.compiled_steps += steps
    times.slower = times.slower or bool(
        times.eager_steps and times.compiled_steps >= 8
        and times.compiled_steady_s / times.compiled_steps > times.eager_steady_s / times.eager_steps)
    return times.slower


def record_eager(model, shape: tuple, spent_s: float, steady_s: float, steps: int) -> None:
    """Count eager decoding: `spent_s` toward the budget, `steady_s` over `steps` for the comparison."""
    times = step_times(model, shape)
    times.eager_s += spent_s
    times.eager_steady_s += steady_s
    times.eager_steps += steps


def static_cache_fits(model, batch: int) -> bool:
    """Whether the compiled step's full-context KV cache (batch x context, every layer) holds no
    more bytes than the weights: each step reads both, so beyond that a long context (an
    imported model's 128k window) would cost more than compiling saves, and its memory."""
    c = model.config
    p = next(model.parameters())
    cache = 2 * c.n_layer * batch * c.kv_heads * c.context_length * c.head_dim * p.element_size()
    weights = {t.data_ptr(): t for t in model.state_dict().values()}        # quantized weights are buffers
    return cache <= sum(t.numel() * t.element_size() for t in weights.values())


def decode_step(model, compiled: bool, cfg: GenerationConfig, shape: tuple[int, bool]):
    """The step function of a run at `shape` (batch rows, rolling cache): eager, compiled, or
    (compiled by the default) compiled with a way back — a step that fails to compile decodes
    eagerly, with a warning, and so does the model from then on."""
    if not compiled:
        return decode_one_token
    fn = compiled_decode_step(model, shape)
    if cfg.compile:
        return fn

    def step(*args):
        if getattr(model, "_eager_only", False):
            return decode_one_token(*args)
        try:
            return fn(*args)
        except Exception as e:      # noqa: BLE001 — compiling is an optimisation; eager serves the run
            warnings.warn(f"{compile_failed(model, e)} (--no-compile skips the attempt)", stacklevel=2)
            return decode_one_token(*args)
    return step


def give_up(model) -> None:
    """The default decodes this model eagerly from now on, on the eager step's weight layout."""
    model._eager_only = True
    inference_layout(model, "cpu")


def compile_failed(model, error: Exception) -> str:
    """`give_up` after the step failed to compile; the one line that says so (`generate` warns it,
    the server logs it)."""
    give_up(model)
    first = str(error).splitlines()[0] if str(error) else ""
    return f"the decode step could not be compiled here ({type(error).__name__}: {first}); decoding eagerly"


def record_run(model, cfg: GenerationConfig, shape: tuple[int, bool], compiled: bool, first_s: float,
               steady_s: float, steady_steps: int) -> None:
    """Count a run's steps (its first step took `first_s`, the `steady_steps` after it
    `steady_s`); the default gives up the compiled step once it is measured slower than eager."""
    if not compiled:
        record_eager(model, shape, first_s + steady_s, steady_s, steady_steps)
    elif record_compiled(model, shape, steady_s, steady_steps) and cfg.compile is None:
        give_up(model)
