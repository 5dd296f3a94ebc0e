"""The continuous-batching scheduler in-process: sequences that join and leave a running batch
decode exactly as they would alone; a cancelled sequence frees its row at once; the queue limit."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from lmforge.config import get_preset
from lmforge.generate import GenerationConfig, generate_ids
from lmforge.model import build_model
from lmforge.serve.events import Finish, Token
from lmforge.serve.scheduler import QueueFull, Scheduler, Sequence


class LetterTokenizer:
    """Token i is the letter chr(65 + i); no end-of-text token."""
    eos_id = None
    special_ids: set[int] = set()

    def decode(self, ids, **kw):
        return "".join(chr(65 + i) for i in ids)

    def decode_stream(self):
        class Stream:
            def step(self, i):
                return chr(65 + i)
        return Stream()


def run(scheduler: Scheduler, prompts, lengths, **params) -> dict[int, list[int]]:
    done, results = threading.Event(), {}

    def emit(event, i):
        if isinstance(event, Finish):
            results[i] = list(event.seq.out_ids)
            if len(results) == len(prompts):
                done.set()
    for i, (p, n) in enumerate(zip(prompts, lengths)):
        scheduler.submit([Sequence(p, GenerationConfig(max_new_tokens=n, **params), lambda e, i=i: emit(e, i))])
    assert done.wait(60)
    return results


@pytest.mark.parametrize("preset", ["gpt-tiny", "llama-tiny"])
def test_joining_and_leaving_sequences_decode_as_alone(preset):
    torch.manual_seed(0)
    model = build_model(get_preset(preset, vocab_size=50)).eval()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16], list(range(1, 13)), [3], [7, 7, 7, 7]]
    lengths = [12, 5, 20, 9, 15, 3]                          # 6 sequences through 4 rows: some wait, rows are reused
    scheduler = Scheduler(model, LetterTokenizer(), max_batch=4, max_queue=16)
    scheduler.step.buckets = (1, 2, 4, 8)                       # an int8 model's (a float one compiles 1 row)
    scheduler.start()
    try:
        got = run(scheduler, prompts, lengths, temperature=0.0)
        seeded = run(scheduler, prompts[:2], [10, 10], temperature=1.0, seed=5)
    finally:
        scheduler.shutdown()
    for i, (p, n) in enumerate(zip(prompts, lengths)):
        alone, _, _ = generate_ids(model, [p], GenerationConfig(max_new_tokens=n, greedy=True))
        assert got[i] == alone[0], i
    for i, p in enumerate(prompts[:2]):
        alone, _, _ = generate_ids(model, [p], GenerationConfig(max_new_tokens=10, temperature=1.0, seed=5))
        assert seeded[i] == alone[0]


@pytest.mark.slow
def test_the_compiled_cpu_step_decodes_joining_and_leaving_sequences_as_alone(monkeypatch):
    """With the default's eager budget spent at once and buckets of 1, 2 and 4 rows (a quantized
    model's; a float one compiles one row), the scheduler decodes 1-4 running rows with the
    compiled step (padded to a bucket, every slot of the context): each sequence still equals its
    solo eager decoding."""
    from lmforge.generate import auto_compile
    torch.manual_seed(0)
    model = build_model(get_preset("llama-tiny", vocab_size=50, context_length=48)).eval()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16], list(range(1, 13)), [3], [7, 7, 7, 7]]
    lengths = [12, 5, 20, 9, 15, 3]
    alone = [generate_ids(model, [p], GenerationConfig(max_new_tokens=n, greedy=True, compile=False))[0][0]
             for p, n in zip(prompts, lengths)]
    monkeypatch.setattr(auto_compile, "AUTO_COMPILE_AFTER_S", 0.0)
    scheduler = Scheduler(model, LetterTokenizer(), max_batch=4, max_queue=16)
    scheduler.step.buckets = (1, 2, 4, 8)                       # an int8 model's (a float one compiles 1 row)
    scheduler.start()
    try:
        got = run(scheduler, prompts, lengths, temperature=0.0)
    finally:
        scheduler.shutdown()
    assert [got[i] for i in range(len(prompts))] == alone
    times = model._decode_times
    assert times[(1, "serve")].compiled and times[(4, "serve")].compiled and times[(4, "serve")].compiled_steps > 0


def test_which_rows_the_compiled_step_takes():
    """One row for a float model, buckets of 1, 2, 4 or 8 rows for a quantized one, within
    max_batch, decoders only; --no-compile / --compile / the default's eager budget decide, and
    only on a CPU."""
    from lmforge.generate import auto_compile
    from lmforge.quantize.model import quantize_model
    from lmforge.serve.decode_step import DecodeStep
    from lmforge.serve.rows import RowCache
    cpu, meta = torch.device("cpu"), torch.device("meta")
    model = build_model(get_preset("llama-tiny", vocab_size=50)).eval()

    def step(compile, max_batch=16):                    # on `model` as it is when called
        return DecodeStep(model, RowCache(model, model.transformer, max_batch, False), compile)
    assert [step(True).bucket(n, cpu) for n in (1, 2, 5)] == [(1, True), (None, False), (None, False)]
    model = copy.deepcopy(model)
    quantize_model(model, 8)                                            # int8: every bucket
    assert [step(True).bucket(n, cpu) for n in (1, 2, 3, 5, 8, 9)] == [
        (1, True), (2, True), (4, True), (8, True), (8, True), (None, False)]
    assert step(True, max_batch=3).bucket(3, cpu) == (None, False)      # no free row to pad with
    assert step(True).bucket(1, meta) == (1, False) and step(False).bucket(1, cpu) == (1, False)
    assert step(None).bucket(1, cpu) == (1, False)                       # the budget not spent yet
    auto_compile.record_eager(model, (1, "serve"), auto_compile.AUTO_COMPILE_AFTER_S, 1.0, 100)
    assert step(None).bucket(1, cpu) == (1, True) and step(None).bucket(2, cpu) == (2, False)
    seq2seq = build_model(get_preset("seq2seq-tiny", vocab_size=50)).eval()
    assert DecodeStep(seq2seq, RowCache(seq2seq, seq2seq.decoder, 16, True), True).bucket(1, cpu) == (1, False)


def test_a_compiled_serve_step_attends_to_the_slots_in_use():
    """The compiled step's keys: slots 0..S-1 up to the furthest row's (at least 2), S marked
    dynamic so one graph serves every length; the row cache holds one slot more than the
    context, so S never spans the whole buffer."""
    from lmforge.serve.decode_step import slots_in_use
    from lmforge.serve.rows import RowCache
    written = slots_in_use(torch.tensor([[3], [9], [0]]), 32)
    assert written.shape == (3, 10) and bool(written.all()) and written._dynamo_dynamic_indices == {1}
    assert slots_in_use(torch.tensor([[0]]), 32).shape == (1, 2)
    model = build_model(get_preset("llama-tiny", vocab_size=50, context_length=32)).eval()
    rows = RowCache(model, model.transformer, 4, False)
    rows.ensure()
    assert rows.caches[0][0].shape[2] == 33


def test_encoder_decoder_sequences_joining_and_leaving_decode_as_alone():
    """Sources of different lengths through 4 rows: each row's cross-attention keys, values and
    source mask move with it when the batch is packed, so every target equals its solo decoding."""
    from lmforge.generate.seq2seq import generate_seq2seq_ids

    class WithBos(LetterTokenizer):
        bos_id = 1
    torch.manual_seed(0)
    model = build_model(get_preset("seq2seq-tiny", vocab_size=50, context_length=48, tie_embeddings=False)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(5.0)
        for block in model.decoder.blocks:                   # make the targets depend on the sources
            block.cross_attn.kv.weight.mul_(6.0)
            block.cross_attn.out.weight.mul_(6.0)
    sources = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16], list(range(20, 40)), [3], [7, 8, 7, 8]]
    lengths = [12, 5, 20, 9, 15, 3]
    scheduler = Scheduler(model, WithBos(), max_batch=4, max_queue=16).start()
    try:
        got = run(scheduler, sources, lengths, temperature=0.0)
    finally:
        scheduler.shutdown()
    alone = [generate_seq2seq_ids(model, [src], bos_id=1, eos_id=None, num_beams=1, max_new_tokens=n)[0][0]
             for src, n in zip(sources, lengths)]
    assert len({tuple(a[:3]) for a in alone}) >= 3              # the sources matter
    assert [got[i] for i in range(len(sources))] == alone


def test_cancel_frees_the_row_and_the_queue_limit():
    torch.manual_seed(0)
    model = build_model(get_preset("gpt-tiny", vocab_size=50, context_length=4096)).eval()
    scheduler = Scheduler(model, LetterTokenizer(), max_batch=1, max_queue=2).start()
    try:
        first_token = threading.Event()
        finished = threading.Event()

        def emit(event):
            if isinstance(event, Token):
                first_token.set()
            elif isinstance(event, Finish):
                finished.set()
        long = Sequence([1, 2, 3], GenerationConfig(max_new_tokens=4000, temperature=0.0), emit)
        scheduler.submit([long])
        assert first_token.wait(30)
        waiting = [Sequence([4], GenerationConfig(max_new_tokens=2, temperature=0.0), lambda e: None) for _ in range(2)]
        scheduler.submit(waiting)                                   # the one row is busy: these wait
        with pytest.raises(QueueFull, match="the queue holds 2"):
            scheduler.submit([Sequence([4], GenerationConfig(max_new_tokens=2), lambda e: None)])
        scheduler.cancel([long])
        for _ in range(600):
            if all(s.finish_reason for s in waiting):
                break
            threading.Event().wait(0.05)
        assert all(s.finish_reason == "length" for s in waiting)     # they got the freed row
        assert not finished.is_set() and len(long.out_ids) < 4000 and scheduler.running == 0
    finally:
        scheduler.shutdown()


def test_server_ngram_blocking_bans_what_beam_search_bans():
    """The server keeps n-gram blocking up to date token by token; it must ban exactly the tokens
    `generate.beam.repeated_ngram_mask` bans on the whole history (the rule translate uses)."""
    import random

    from lmforge.generate.beam import repeated_ngram_mask
    from lmforge.serve.picker import TokenPicker
    rng = random.Random(0)
    for _ in range(200):
        n, vocab = rng.randint(1, 4), 6
        picker = TokenPicker(GenerationConfig(no_repeat_ngram_size=n), [1], vocab, "cpu")
        ids = [rng.randrange(vocab) for _ in range(rng.randint(0, 30))]
        for tok in ids:
            picker._remember(tok)
        mask = repeated_ngram_mask(torch.tensor([ids or [0]]), len(ids), n, vocab)[0]
        assert (picker._repeats() or set()) == set(mask.nonzero().flatten().tolist()), (n, ids)
