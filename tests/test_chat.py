import io
import json

import pytest
import torch

from lmforge.api import load
from lmforge.data.chat import ChatTemplate, chat_template, read_chat_jsonl
from lmforge.tasks.sft import SFTTask
from lmforge.errors import DataError, LmforgeError
from lmforge.generate import GenerationConfig
from lmforge.generate.chat import Chat, chat_loop
from lmforge.tokenizers import Tokenizer

CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a loop."},
                {"role": "assistant", "content": "for"}, {"role": "user", "content": "Another?"},
                {"role": "assistant", "content": "while, too"}]


@pytest.fixture(scope="module")
def tok(tiny_model_dir) -> Tokenizer:
    return Tokenizer.load(tiny_model_dir)


def test_the_targets_are_exactly_the_assistant_tokens(tok):
    ids, target = ChatTemplate().render(tok, CONVERSATION)
    assert ids[0] == tok.eos_id and len(ids) == len(target)
    assert [i for i, t in zip(ids, target) if t] == tok.encode("for") + [tok.eos_id] + tok.encode("while, too") + [
        tok.eos_id]
    text = tok.decode(ids)                                               # <eos> is skipped when decoding
    assert text == "<|system|>\nBe brief.\n<|user|>\nName a loop.\n<|assistant|>\nfor<|user|>\nAnother?\n" \
                   "<|assistant|>\nwhile, too"
    prompt, _ = ChatTemplate().render(tok, CONVERSATION[:2], add_generation_prompt=True)
    assert tok.decode(prompt).endswith("Name a loop.\n<|assistant|>\n")


def test_sft_batches_put_the_loss_only_on_assistant_tokens(tmp_path, tok):
    path = tmp_path / "chats.jsonl"
    short = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    path.write_text("\n".join(json.dumps({"messages": m}) for m in (CONVERSATION, short)) + "\n")
    objective = SFTTask(path, context_length=128, tokenizer=tok)
    assert chat_template(tok) == ChatTemplate()                          # attached, so it is saved with the model
    batch = objective.collate("train", torch.tensor([0]))
    ids, target = ChatTemplate().render(tok, CONVERSATION)
    x, y = batch["x"][0], batch["y"][0]
    assert x.tolist() == ids[:-1]
    scored = [i for i, label in enumerate(y.tolist()) if label != -100]
    assert scored == [i - 1 for i, t in enumerate(target) if t]           # position i predicts token i + 1
    assert [y[i].item() for i in scored] == [i for i, t in zip(ids, target) if t]
    both = objective.collate("train", torch.tensor([0, 0]))              # right padding is never a target
    assert both["x"].shape == (2, len(ids) - 1)


@pytest.mark.parametrize("line, message", [
    ('{"messages": [}', r":2 is not valid JSON"),
    ('{"text": "hi"}', r":2 has no \"messages\" field"),
    ('{"messages": [{"role": "bot", "content": "x"}]}', r"bad.jsonl:2: message 0 .*\"role\" \(system, user, assistant\)"),
    ('{"messages": [{"role": "user", "content": "x"}]}', r"bad.jsonl:2 has no assistant message"),
])
def test_a_malformed_chat_line_is_named(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"messages": CONVERSATION}) + "\n" + line + "\n")
    with pytest.raises(DataError, match=message):
        read_chat_jsonl(path)


def test_chat_drops_the_oldest_turns_to_stay_in_the_context(tiny_model_dir):
    lm = load(tiny_model_dir, device="cpu")                              # a 32-token context, char tokenizer
    with pytest.warns(UserWarning, match="no chat template"):
        chat = Chat(lm.module, lm.tokenizer, system="hi", gen=GenerationConfig(max_new_tokens=4, greedy=True))
    chat.template = ChatTemplate(system="S:", user="U:", assistant="A:", end="\n")
    for text in ("ab", "cd", "ef", "gh"):
        chat.reply(text)
        prompt = chat.prompt_ids(chat.messages)
        assert len(prompt) <= lm.config.context_length
        assert lm.tokenizer.decode(prompt).startswith("S:hi\nU:")          # the system prompt is never dropped
    assert chat.dropped > 0 and chat.messages[-2] == {"role": "user", "content": "gh"}
    with pytest.raises(LmforgeError, match="send a shorter message"):
        chat.reply("x" * 40)


def test_sft_finetune_then_chat_from_stdin(tmp_path, tiny_model_dir, capsys):
    from lmforge.cli import main
    chats = tmp_path / "chats.jsonl"
    chats.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                        {"role": "assistant", "content": a}]})
                               for q, a in [("1+1?", "2"), ("2+2?", "4"), ("3+3?", "6")]) + "\n")
    out = tmp_path / "sft"
    assert main(["finetune", str(tiny_model_dir), "--task", "sft", "--data", str(chats), "--out", str(out),
                 "--max-steps", "3", "--batch-size", "2", "--eval-iters", "1", "--lr", "1e-3", "--no-progress",
                 "--device", "cpu"]) == 0
    assert chat_template(Tokenizer.load(out)) == ChatTemplate()          # stored in the model directory
    capsys.readouterr()
    lm = load(out, device="cpu")
    chat = Chat(lm.module, lm.tokenizer, gen=GenerationConfig(max_new_tokens=3, greedy=True))
    chat.template = ChatTemplate(system="S:", user="U:", assistant="A:", end="\n")    # short: a 32-token context
    stdin = io.StringIO("1+1?\n\n/reset\n2+2?\n/exit\nnever read\n")
    stdout = io.StringIO()
    assert chat_loop(chat, stdin, stdout) == 2
    assert stdout.getvalue().count("assistant> ") == 2 and chat.messages[0]["content"] == "2+2?"
    reply = lm.chat([{"role": "user", "content": "1+1?"}], max_new_tokens=3, greedy=True)
    assert isinstance(reply, str)
    with pytest.raises(LmforgeError, match="end with a user message"):
        lm.chat([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
