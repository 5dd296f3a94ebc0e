"""The Python API around a model directory.

    >>> import lmforge
    >>> lm = lmforge.load("runs/quickstart")                     # doctest: +SKIP
    >>> lm.generate("The for statement", max_new_tokens=40)      # doctest: +SKIP
    >>> lm.perplexity(open("notes.txt").read())["ppl"]          # doctest: +SKIP
    >>> lmforge.load("runs/topics").classify("I love perl")     # doctest: +SKIP
    {'label': 'perl', 'score': 0.91, 'probs': {...}}
    >>> lmforge.load("runs/en-zh").translate("Hello")           # doctest: +SKIP
    '你好'
    >>> lmforge.load("runs/minilm").embed(["a cat", "a dog"]).shape   # doctest: +SKIP
    torch.Size([2, 384])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .errors import LmforgeError
from .adapt.runs import load_for_inference, load_model  # noqa: F401  (load_model: `lmforge.load_model`)
from .loading import write_model_dir
from .tokenizers import Tokenizer


class Model:
    """A loaded model directory: `module` (torch), `config`, `tokenizer`, and the verbs."""

    def __init__(self, module: torch.nn.Module, config: ModelConfig, tokenizer: Tokenizer, path: Path | None = None,
                 target_tokenizer: Tokenizer | None = None):
        self.module, self.config, self.tokenizer, self.path = module, config, tokenizer, path
        if target_tokenizer is None and config.family == "seq2seq" and path is not None:
            from .data.pairs import load_target_tokenizer
            target_tokenizer = load_target_tokenizer(path, tokenizer)
        self.target_tokenizer = target_tokenizer or tokenizer   # seq2seq output side (the same when shared)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def generate(self, prompt: str | list[str] = "", stream=None, draft: "Model | None" = None,
                 **options: Any) -> str | list[str]:
        """Text continuing `prompt` (or a list, for a batch). Options are GenerationConfig fields
        (max_new_tokens, temperature, greedy, top_k, top_p, repetition_penalty, stop, seed,
        draft_tokens). `draft`: a smaller loaded model with the same tokenizer, for speculative
        decoding (one prompt)."""
        from .generate import GenerationConfig, generate
        completions = generate(self.module, self.tokenizer, prompt, GenerationConfig(**options), stream=stream,
                               draft=self.draft_module(draft))
        texts = [c.text for c in completions]
        return texts[0] if isinstance(prompt, str) else texts

    def classify(self, texts: str | list[str], pairs: str | list[str] | None = None,
                 batch_size: int = 64) -> dict[str, Any] | list[dict[str, Any]]:
        """For each text: {"label": the most likely class, "score": its probability, "probs":
        {label: probability}} (a classifier model directory; `pairs` for sentence-pair tasks)."""
        from .tasks.classify import predict_proba
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        pairs = [pairs] if isinstance(pairs, str) else pairs
        probs = predict_proba(self.module, self.tokenizer, texts, pairs, batch_size=batch_size)
        labels = self.config.labels
        out = [{"label": labels[int(p.argmax())], "score": float(p.max()),
                "probs": {lab: float(q) for lab, q in zip(labels, p)}} for p in probs]
        return out[0] if single else out

    def embed(self, texts: str | list[str], **options: Any) -> torch.Tensor:
        """Sentence embeddings: (N, d) float32 vectors for a list of texts, (d,) for one text.
        Options are `lmforge.embed.EmbedConfig` fields: `pooling` (auto, mean, cls, last),
        `normalize` (unit length, so `a @ b` is the cosine similarity), `batch_size`."""
        from .embed import EmbedConfig, embed_texts
        o = EmbedConfig(**options)
        single = isinstance(texts, str)
        vectors = embed_texts(self.module, self.tokenizer, [texts] if single else list(texts), o.pooling,
                              o.normalize, o.batch_size)
        return vectors[0] if single else vectors

    def translate(self, texts: str | list[str], batch_size: int = 32, **options: Any) -> str | list[str]:
        """Translate (or summarise) with an encoder-decoder model directory: greedy with
        num_beams=1, else beam search over the KV cache. Options are the GenerationConfig fields
        in `generate.seq2seq.TRANSLATE_OPTIONS` (defaults: `TRANSLATE_DEFAULTS`, 4 beams)."""
        from .generate.seq2seq import translate, translation_config
        gen = translation_config(**options)
        single = isinstance(texts, str)
        out = translate(self.module, self.tokenizer, self.target_tokenizer, [texts] if single else list(texts),
                        num_beams=gen.num_beams, max_new_tokens=gen.max_new_tokens,
                        length_penalty=gen.length_penalty, batch_size=batch_size,
                        no_repeat_ngram_size=gen.no_repeat_ngram_size)
        return out[0] if single else out

    def chat(self, messages: list[dict[str, str]], draft: "Model | None" = None, **options: Any) -> str:
        """The assistant's reply to a conversation — [{"role": "system" | "user" | "assistant",
        "content": ...}, ...] ending with a user message — rendered with the model's chat template."""
        from .data.chat import check_messages
        from .generate import GenerationConfig
        from .generate.chat import Chat
        messages = check_messages(messages, "messages")
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        turns = messages[1:] if messages[0]["role"] == "system" else messages
        if not turns or turns[-1]["role"] != "user":
            raise LmforgeError("the conversation must end with a user message for the model to reply to")
        session = Chat(self.module, self.tokenizer, system, GenerationConfig(**options), self.draft_module(draft))
        session.messages = turns[:-1]
        return session.reply(turns[-1]["content"])

    def attention_maps(self, text: str, kind: str = "auto", target: str | None = None, max_tokens: int | None = None,
                       with_tokens: bool = False):
        """Attention weights for `text`: (layers, heads, T, T) float32, row q holding how much
        query token q attends to each key token. Encoder-decoders: `kind` "cross" (the decoder
        reading the source; default), "encoder" or "decoder", over `target` (default: the
        model's greedy translation). `with_tokens`: also (query token strings, key token strings)."""
        from .viz.attention import attention_maps, check_kind
        kind = check_kind(self.config.family, kind)
        limit = min(max_tokens or self.config.context_length, self.config.context_length)
        if self.config.family == "decoder":
            src = self.tokenizer.encode(text, bos=self.tokenizer.add_bos)[:limit]
        else:                                             # <bos> text <eos>, as the encoder saw it in training
            encoder_bos = self.config.family == "encoder" and self.tokenizer.bos_id is not None
            bos = [self.tokenizer.bos_id] if encoder_bos else []
            eos = [self.tokenizer.eos_id] if self.tokenizer.eos_id is not None else []
            src = (bos + self.tokenizer.encode(text))[: limit - len(eos)] + eos
        if not src:
            raise LmforgeError("attention maps need a text of at least one token")
        tgt = None
        if self.config.family == "seq2seq":
            target = self.translate(text, num_beams=1) if target is None else target
            tgt_tok = self.target_tokenizer
            tgt = ([tgt_tok.bos_id] + tgt_tok.encode(target))[:limit]
        maps = attention_maps(self.module, src, tgt, kind)
        if not with_tokens:
            return maps
        def strings(tok, ids):
            return [tok.decode([i], skip_special_tokens=False) for i in ids]
        src_s = strings(self.tokenizer, src)
        tgt_s = strings(self.target_tokenizer, tgt) if tgt is not None else None
        queries, keys = {"self": (src_s, src_s), "encoder": (src_s, src_s), "decoder": (tgt_s, tgt_s),
                         "cross": (tgt_s, src_s)}[kind]
        return maps, (queries, keys)

    def draft_module(self, draft: "Model | None"):
        """The torch module of `draft` (a smaller model for speculative decoding), checked to share
        this model's tokenizer: what `generate.generate(..., draft=)` and `Chat` take. None for None."""
        if draft is None:
            return None
        from .generate.speculative import check_draft
        check_draft(self.tokenizer, draft.tokenizer, f"the draft model {draft.path}")
        return draft.module

    def score(self, text: str) -> dict[str, Any]:
        """Per-token log-probabilities of `text`: {"tokens": [{"token", "id", "logprob"}], "logprob", "greedy"}."""
        from .evaluate.score import score_text
        return score_text(self.module, self.tokenizer, text)

    def loglikelihood(self, context: str, continuation: str) -> tuple[float, bool]:
        """(log p(continuation | context), whether greedy decoding would write it): lm-eval's request."""
        from .evaluate.score import loglikelihood
        return loglikelihood(self.module, self.tokenizer, context, continuation)

    def perplexity(self, text: str, stride: int | None = None, batch_size: int = 8) -> dict[str, float]:
        from .evaluate.perplexity import perplexity
        return perplexity(self.module, self.tokenizer, text, stride=stride, batch_size=batch_size)

    def card(self) -> str:
        """The model card (README.md in Hugging Face's layout: `lmforge.card`) as it would be written
        now — its directory's card refreshed, a hand-written README.md as it is, or one made from
        the config and tokenizer of a model without an lmforge directory. Nothing is written."""
        from .card import current_card
        return current_card(self.path, self.config, self.tokenizer)

    def save(self, directory: str | Path, format: str = "lmforge", outtype: str = "auto", overwrite: bool = False,
             inputs: list[tuple[str, str | Path | None]] = ()) -> Path:
        """Write a model directory; format="hf" writes one that `transformers` loads (with the model
        card, `card()`), format="gguf" one .gguf file (`directory` names it) that llama.cpp and Ollama
        run, its matrices in `outtype` (auto, f32, f16, bf16, q8_0). A directory appears whole or not at all; it must not
        be this model's own directory or one of `inputs`, and one holding anything is replaced only
        with `overwrite` (see `lmforge.safety`)."""
        from .card import card_metadata, current_card
        from .modeldir import state_dict_for_save
        inputs = [("the model's own directory", self.path), *inputs]
        if format == "hf":
            from .interop import write_hf
            write_hf(self.config, state_dict_for_save(self.module), self.tokenizer, directory, overwrite=overwrite,
                     inputs=inputs, card=current_card(self.path, self.config, self.tokenizer, "transformers"))
            return Path(directory)
        if format == "gguf":
            from .interop import write_gguf
            write_gguf(self.config, state_dict_for_save(self.module), self.tokenizer, directory, outtype,
                       overwrite=overwrite, card=card_metadata(self.path, self.config, self.tokenizer))
            return Path(directory)
        if format != "lmforge":
            raise LmforgeError(f"format={format!r} is unknown; use lmforge, hf or gguf")
        return write_model_dir(directory, self.module, self.config, self.tokenizer, self.target_tokenizer,
                               overwrite=overwrite, inputs=inputs)

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.module.parameters())
        return f"Model({self.path}, family={self.config.family}, params={n / 1e6:.2f}M, {self.tokenizer})"


def load(path: str | Path, device: str = "auto", dtype: str | None = None) -> Model:
    """Load a model directory — lmforge's or a Hugging Face GPT-2 / Llama / BERT one — or a GGUF
    file (Llama or GPT-2 kind, dequantized to float32) for inference
    (on GPU when there is one, unless device says), its weights laid out for fast inference
    on that device (`model.inference_layout`)."""
    module, config, tokenizer = load_for_inference(path, device, dtype)
    return Model(module, config, tokenizer, Path(path))
