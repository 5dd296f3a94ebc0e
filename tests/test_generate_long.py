"""Generation past the context window (rolling cache / amortised re-encode), log-probabilities,
min-p, JSON mode and scoring, on tiny random models."""

import json

import pytest
import torch

from lmforge.config import get_preset
from lmforge.errors import LmforgeError
from lmforge.generate import GenerationConfig, generate, generate_ids
from lmforge.generate.decode import ring_slots
from lmforge.generate.json_mode import JsonState, json_table, step_text
from lmforge.generate.sampling import filter_min_p, probabilities, token_logprobs
from lmforge.model import build_model

CTX = 16


def tiny(position: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(get_preset("gpt-tiny", vocab_size=40, context_length=CTX, position=position)).eval()


@torch.no_grad()
def sliding_window_reference(model, prompt: list[int], n: int, sinks: int = 0) -> list[int]:
    """Greedy tokens, recomputing the whole text from scratch at every step with sliding-window
    attention: each token sees the last CTX tokens (and the first `sinks`), positions counting on."""
    tr, seq = model.transformer, list(prompt)
    tr.rotary.extend(len(prompt) + n) if hasattr(tr, "rotary") else None
    for _ in range(n):
        T = len(seq)
        q, k = torch.arange(T)[:, None], torch.arange(T)[None, :]
        mask = (k <= q) & ((k > q - CTX + sinks) | (k < sinks))
        x, rope = tr.embed(torch.tensor([seq]), torch.arange(T))
        for block in tr.blocks:
            x = block(x, mask=mask[None, None], rope=rope)
        seq.append(int(model.lm_head(tr.norm(x))[0, -1, :40].argmax()))
    return seq[len(prompt):]


@torch.no_grad()
def crop_reference(model, prompt: list[int], n: int) -> list[int]:
    """Greedy tokens recomputing, from scratch at every step, the window the re-encode schedule
    keeps: it grows to CTX tokens, then restarts from the last CTX - CTX // 2."""
    seq, start, keep, restarts = list(prompt), 0, CTX - CTX // 2, 0
    for _ in range(n):
        if len(seq) - start > CTX:
            start, restarts = len(seq) - keep, restarts + 1
        seq.append(int(model(torch.tensor([seq[start:]]))[0, -1].argmax()))
    return seq[len(prompt):], restarts


@pytest.mark.parametrize("position,sinks", [("rope", 0), ("rope", 2), ("none", 0)])
def test_rolling_cache_equals_sliding_window_reference(position, sinks):
    model = tiny(position)
    prompt = [5, 6, 7, 8, 9]
    got, reasons, stats = generate_ids(model, [prompt], GenerationConfig(max_new_tokens=3 * CTX, greedy=True,
                                                                         sink_tokens=sinks))
    assert stats["window"] == "rolling" and len(got[0]) == 3 * CTX
    assert got[0] == sliding_window_reference(model, prompt, 3 * CTX, sinks)


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_reencode_equals_cropped_reference(position):
    model = tiny(position)
    prompt = [5, 6, 7, 8, 9]
    got, _, stats = generate_ids(model, [prompt], GenerationConfig(max_new_tokens=3 * CTX, greedy=True))
    expect, restarts = crop_reference(model, prompt, 3 * CTX)
    assert got[0] == expect and stats["window"] == "reencode" and stats["reencodes"] == restarts >= 3


def test_within_window_unchanged_and_batches_of_equal_prompts():
    model = tiny("rope")
    short, _, _ = generate_ids(model, [[5, 6, 7]], GenerationConfig(max_new_tokens=CTX - 3, greedy=True))
    long, _, _ = generate_ids(model, [[5, 6, 7]] * 2, GenerationConfig(max_new_tokens=4 * CTX, greedy=True))
    assert long[0][: CTX - 3] == short[0] and long[0] == long[1]


def test_five_times_the_context_stays_inside_the_cache():
    slots = ring_slots(torch.arange(5 * CTX), CTX, 3)
    assert int(slots.max()) < CTX and slots[:3].tolist() == [0, 1, 2] and 0 not in slots[3:].tolist()
    for position in ("rope", "learned"):
        model = tiny(position, seed=1)
        cache_sizes = []
        setup = model.setup_cache
        model.setup_cache = lambda b, n, *a: (cache_sizes.append(n), setup(b, n, *a))[1]
        ids, _, _ = generate_ids(model, [[1, 2], [3, 4, 5, 6]], GenerationConfig(max_new_tokens=5 * CTX, seed=0))
        assert [len(i) for i in ids] == [5 * CTX] * 2 and cache_sizes == [CTX]


def test_stop_strings_streaming_and_refusals_past_the_window(lm_dir_small):
    model, tok = lm_dir_small
    pieces = []
    out = generate(model, tok, "ab", GenerationConfig(max_new_tokens=3 * model.config.context_length, greedy=True),
                   stream=lambda b, p: pieces.append(p))[0]
    assert "".join(pieces) == out.text and len(out.ids) == 3 * model.config.context_length
    with pytest.warns(UserWarning, match="beam search cannot go past it"):
        generate(model, tok, "ab", GenerationConfig(max_new_tokens=200, num_beams=2))
    ctx = model.config.context_length
    stopped = generate(model, tok, "ab", GenerationConfig(max_new_tokens=3 * ctx, greedy=True,
                                                          stop=[out.text[2 * ctx: 2 * ctx + 2]]))[0]
    assert stopped.finish_reason == "stop" and len(stopped.text) <= 2 * ctx    # a stop string found past the window
    with pytest.raises(LmforgeError, match="applies to rotary"):
        generate_ids(model, [[1, 2]], GenerationConfig(max_new_tokens=200, sink_tokens=2))
    with pytest.raises(LmforgeError, match="prompts of one length"):
        generate_ids(tiny("rope"), [[1], [2, 3]], GenerationConfig(max_new_tokens=200, sink_tokens=2))


@pytest.fixture(scope="module")
def lm_dir_small(tiny_model_dir):
    from lmforge.api import load
    lm = load(tiny_model_dir, device="cpu")
    return lm.module, lm.tokenizer


def test_min_p_and_composition_order():
    logits = torch.tensor([[0.0, 1.0, 3.0, 2.9]])
    assert torch.isfinite(filter_min_p(logits, 0.5)).tolist() == [[False, False, True, True]]
    # temperature first: at T=4 the distribution flattens, so min-p 0.5 keeps three tokens
    assert (probabilities(logits, 4.0, min_p=0.5) > 0).sum().item() == 3
    # per-row parameters: row 0 greedy, row 1 top-k 1 => both the argmax
    rows = torch.tensor([[0.0, 5.0, 1.0], [2.0, 0.0, 1.0]])
    p = probabilities(rows, torch.tensor([0.0, 1.0]), top_k=torch.tensor([0, 1]), min_p=torch.tensor([0.0, 0.2]))
    assert p.argmax(-1).tolist() == [1, 0] and p[0, 1] == 1 and p[1, 0] == 1
    with pytest.raises(LmforgeError, match="min_p"):
        GenerationConfig(min_p=1.5)
    with pytest.raises(LmforgeError, match="logprobs"):
        GenerationConfig(logprobs=21)


def test_logprobs_match_a_full_forward(lm_dir_small):
    model, tok = lm_dir_small
    c = generate(model, tok, "The ", GenerationConfig(max_new_tokens=6, greedy=True, logprobs=3))[0]
    assert len(c.logprobs) == len(c.ids) == 6
    prompt = tok.encode("The ")
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prompt + c.ids])).float(), -1)[0]
    for i, rec in enumerate(c.logprobs):
        expect = logp[len(prompt) - 1 + i]
        assert rec["id"] == c.ids[i] and rec["logprob"] == pytest.approx(float(expect[c.ids[i]]), abs=1e-4)
        assert [t["id"] for t in rec["top"]] == expect.topk(3).indices.tolist()
        assert rec["top"][0]["logprob"] == pytest.approx(rec["logprob"], abs=1e-6)   # greedy: the chosen is top
    lp, ids, lps = token_logprobs(torch.tensor([[0.0, 0.0]]), torch.tensor([1]), 1)
    assert lp.item() == pytest.approx(-0.6931, abs=1e-4) and lps.shape == (1, 1)


def test_score_and_loglikelihood(tiny_model_dir):
    from lmforge.api import load
    lm = load(tiny_model_dir, device="cpu")
    scored = lm.score("The for statement")
    ids = [lm.tokenizer.eos_id] + lm.tokenizer.encode("The for statement")
    with torch.no_grad():
        logp = torch.log_softmax(lm.module(torch.tensor([ids[:-1]])).float(), -1)[0]
    expect = logp.gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
    assert [t["logprob"] for t in scored["tokens"]] == pytest.approx(expect.tolist(), abs=1e-4)
    ll, greedy = lm.loglikelihood("The for", " statement")
    assert ll == pytest.approx(float(expect[-len(lm.tokenizer.encode(" statement")):].sum()), abs=1e-3)
    assert isinstance(greedy, bool) and ll < 0
    long = lm.score("The for statement " * 10)                      # longer than the 32-token context
    assert len(long["tokens"]) == len(lm.tokenizer.encode("The for statement " * 10))


def test_json_mode_output_is_one_valid_object(lm_dir_small):
    model, tok = lm_dir_small
    for seed in range(3):
        c = generate(model, tok, "", GenerationConfig(max_new_tokens=400, temperature=1.0, seed=seed,
                                                      json_mode=True))[0]
        if c.finish_reason == "eos":
            assert isinstance(json.loads(c.text), dict)
        else:                                                       # cut by length: still a valid prefix
            assert step_text(("start",), (), c.text)[0] is not None
    table = json_table(tok, model.config.vocab_size)
    state = JsonState(table)
    assert table.texts[int(state.allowed_mask().nonzero()[0])].strip() in ("{", "")
    for ch in '{"a": 1}':
        state.advance(tok.encode(ch)[0])
    assert state.complete and state.allowed_mask().nonzero().flatten().tolist() == [tok.eos_id]
    with pytest.raises(LmforgeError, match="does not continue valid JSON"):
        JsonState(table).advance(tok.encode("x")[0])


def test_json_mode_refuses_a_tokenizer_without_braces():
    from tokenizers import Tokenizer as HF
    from tokenizers.models import WordLevel
    from lmforge.tokenizers import Tokenizer
    hf = HF(WordLevel({"<eos>": 0, "a": 1, "b": 2}, unk_token="<eos>"))
    with pytest.raises(LmforgeError, match="cannot spell a JSON object"):
        json_table(Tokenizer(hf, "hf", {"eos": "<eos>"}))


@pytest.mark.slow
def test_compiled_step_past_the_window_gives_the_same_tokens():
    model = tiny("rope")
    cfg = dict(max_new_tokens=3 * CTX, greedy=True)
    eager, _, _ = generate_ids(model, [[1, 2, 3]], GenerationConfig(**cfg))
    compiled, _, stats = generate_ids(model, [[1, 2, 3]], GenerationConfig(**cfg, compile=True))
    assert compiled == eager and stats["window"] == "rolling"


def test_cli_logprobs_json_score_and_bad_input(tiny_model_dir, capsys):
    from lmforge.cli import main
    d = str(tiny_model_dir)
    assert main(["generate", d, "The ", "--json", "--greedy", "--max-new-tokens", "40", "--logprobs", "2",
                 "--device", "cpu"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["tokens"] == 40 and row["window"] == "reencode" and len(row["logprobs"]) == 40
    assert len(row["logprobs"][0]["top"]) == 2
    assert main(["score", d, "The for", "--continuation", " statement", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["logprob"] < 0
    assert main(["score", d, "The for", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("total ")
    for bad, words in ((["--logprobs", "21", "--json"], "logprobs=21"), (["--min-p", "1.5"], "min_p=1.5"),
                       (["--logprobs", "2"], "add --json")):
        assert main(["generate", d, "The", "--device", "cpu", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "Traceback" not in err and len(err.splitlines()) == 1
