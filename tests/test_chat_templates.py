"""Jinja chat templates: token ids equal `transformers`' apply_chat_template for real-world
templates (written out here), the sandbox refuses Python internals, and lmforge's own template
exported as Jinja chats the same in `transformers`."""

import pytest

from lmforge.data.chat import ChatTemplate
from lmforge.errors import LmforgeError
from lmforge.generate.chat_template import chat_ids, render_chat
from lmforge.tokenizers import Tokenizer, train_bpe_tokenizer

LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
          "{% endif %}")
CHATML_QWEN = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
               "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
               "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
         "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
         "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
         "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
         "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
         "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")
ZEPHYR = """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\n'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""
SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|im_start|>",
            "<|im_end|>", "<start_of_turn>", "<end_of_turn>", "<|user|>", "<|system|>", "<|assistant|>"]
CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Capital of France? "},
        {"role": "assistant", "content": " Paris."}, {"role": "user", "content": "And of Spain, café?"}]


@pytest.fixture(scope="module")
def make_dir(tmp_path_factory, corpus_file):
    base = train_bpe_tokenizer([corpus_file.read_text()[:20000]], vocab_size=400)

    def make(name: str, template: str, bos: str = "<bos>", eos: str = "<eos>", specials=tuple(SPECIALS)):
        from tokenizers import Tokenizer as HFTokenizer
        hf = HFTokenizer.from_str(base.hf.to_str())
        hf.add_special_tokens(list(specials))
        tok = Tokenizer(hf, "hf", dict(base.special, bos=bos, eos=eos), {"chat_template": template})
        d = tmp_path_factory.mktemp(name)
        tok.save(d)
        return d
    return make


def hf_ids(directory, messages, add_generation_prompt=True):
    from transformers import AutoTokenizer
    out = AutoTokenizer.from_pretrained(str(directory)).apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.mark.parametrize("name,template,messages", [
    ("llama3", LLAMA3, CHAT), ("chatml", CHATML_QWEN, CHAT[1:]), ("chatml_sys", CHATML_QWEN, CHAT),
    ("gemma", GEMMA, CHAT[1:]), ("zephyr", ZEPHYR, CHAT)])
def test_ids_equal_transformers_apply_chat_template(make_dir, name, template, messages):
    d = make_dir(name, template, bos="<|begin_of_text|>" if name == "llama3" else "<bos>")
    tok = Tokenizer.load(d)
    for gen_prompt in (True, False):
        assert chat_ids(tok, messages, gen_prompt) == hf_ids(d, messages, gen_prompt)


def test_template_errors_are_clear(make_dir):
    tok = Tokenizer.load(make_dir("gemma_err", GEMMA))
    with pytest.raises(LmforgeError, match="refused the conversation: System role not supported"):
        chat_ids(tok, CHAT)
    with pytest.raises(LmforgeError, match="does not render: TemplateSyntaxError"):
        render_chat("{% for m in messages %}", CHAT)
    with pytest.raises(LmforgeError, match="sandbox forbids"):
        render_chat("{{ messages.__class__.__base__.__subclasses__() }}", CHAT)
    with pytest.raises(LmforgeError, match="sandbox forbids"):
        render_chat("{{ cycler.__init__.__globals__ }}", CHAT)


def test_lmforge_template_as_jinja_chats_the_same_in_transformers(make_dir):
    template = ChatTemplate()
    d = make_dir("lmforge", template.jinja(), specials=())
    tok = Tokenizer.load(d)
    for messages in (CHAT, CHAT[1:3]):
        ids, _ = template.render(tok, messages, add_generation_prompt=messages[-1]["role"] == "user")
        assert hf_ids(d, messages, messages[-1]["role"] == "user") == ids


def test_a_model_with_a_jinja_template_chats_with_it(tiny_model_dir, tmp_path):
    import json
    import shutil

    from lmforge.api import load
    from lmforge.generate import GenerationConfig
    from lmforge.generate.chat import Chat
    d = tmp_path / "hf-chat"
    shutil.copytree(tiny_model_dir, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("lmforge_chat_template", None)
    short = "{% for m in messages %}<{{ m.role[0] }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": short}))
    lm = load(d, device="cpu")
    chat = Chat(lm.module, lm.tokenizer, gen=GenerationConfig(max_new_tokens=5, greedy=True))
    turn = [{"role": "user", "content": "hi"}]
    assert chat.prompt_ids(turn) == chat_ids(lm.tokenizer, turn)
    assert lm.tokenizer.decode(chat.prompt_ids(turn)) == "<u>hi<a>"
    assert isinstance(chat.reply("hi"), str)
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": "{% for m in messages %}"}))
    with pytest.raises(LmforgeError, match="does not render"):
        load(d, device="cpu").chat(turn)
