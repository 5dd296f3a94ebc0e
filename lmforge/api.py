"""The Python API around a model directory.

    >>> import lmforge
    >>> lm = lmforge.load("runs/quickstart")                     # doctest: +SKIP
    >>> lm.generate("The for statement", max_new_tokens=40)      # doctest: +SKIP
    >>> lm.perplexity(open("notes.txt").read())["ppl"]          # doctest: +SKIP
    >>> lmforge.load("runs/topics").classify("I love perl")     # doctest: +SKIP
    {'label': 'perl', 'score': 0.91, 'probs': {...}}
    >>> lmforge.load("runs/en-zh").translate("Hello")           # doctest: +SKIP
    '你好'
    >>> lmforge.load("runs/debian-summaries").summarize(long_description)   # doctest: +SKIP
    'collection of tools for Debian system administration'
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
                 batch_size: int = 64, ensemble: list[Model] | None = None) -> dict[str, Any] | list[dict[str, Any]]:
        """For each text: {"label": the most likely class, "score": its probability, "probs":
        {label: probability}} (a classifier model directory; `pairs` for sentence-pair tasks).
        `ensemble`: more loaded classifiers with the same labels (fine-tunes of the same table, e.g.
        with other seeds); the probabilities of all are averaged."""
        from .tasks.classify import mean_proba, same_labels
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        pairs = [pairs] if isinstance(pairs, str) else pairs
        members = [self, *(ensemble or [])]
        labels = same_labels([(str(m.path), m.config.labels) for m in members])
        probs = mean_proba([(m.module, m.tokenizer) for m in members], texts, pairs, batch_size=batch_size)
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
        out = translate(self.module, self.tokenizer, self.target_tokenizer, [texts] if single else list(texts), gen,
                        batch_size=batch_size)
        return out[0] if single else out

    def summarize(self, texts: str | list[str], batch_size: int = 32, **options: Any) -> str | list[str]:
        """Summarise with an encoder-decoder trained on document / summary pairs, or with a decoder
        fine-tuned on them with `--task sft` (each text is the user's message in its chat
        template). Options are the GenerationConfig fields in `generate.summarize.SUMMARIZE_OPTIONS`
        (num_beams, length_penalty, min_new_tokens, max_new_tokens, no_repeat_ngram_size; defaults:
        `SUMMARIZE_DEFAULTS`, 4 beams)."""
        from .generate.summarize import summarization_config, summarize
        gen = summarization_config(**options)
        single = isinstance(texts, str)
        out = summarize(self.module, self.tokenizer, self.target_tokenizer, [texts] if single else list(texts), gen,
                        batch_size=batch_size)
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
        from .inspect import attention_maps, check_kind
        kind = check_kind(self.config.family, kind)
        maps, tokens = attention_maps(self, text, kind, self._decoder_text(text, target), max_tokens)
        return (maps, tokens) if with_tokens else maps

    # ---- the glass box (lmforge.inspect): results are dataclasses with to_dict(), table() and plot(PNG) ----
    def trace(self, text: str, names: list[str] | None = None, target: str | None = None):
        """A `Trace` of `text`: the activations of the hook points `names` (TransformerLens' names,
        e.g. "blocks.0.hook_resid_post", globs allowed; default: all), the token strings, the logits.
        Encoder-decoders: the decoder reads `target` (default: the model's greedy translation)."""
        from .inspect import trace
        return trace(self, text, names, self._decoder_text(text, target))

    def patched(self, patches: dict):
        """Context: inside it every forward of this model (generation included) passes the activation
        of each named hook point (globs allowed) through fn(activation, name) -> new activation."""
        from .inspect import editing
        return editing(self.module, patches)

    def logit_lens(self, text: str, target: str | None = None, **options):
        """The `LogitLens` of `text`: every layer's top tokens, and the rank of the actual next token.
        Options: `lmforge.inspect.LensConfig` fields (top_k)."""
        from .inspect import logit_lens
        return logit_lens(self, text, self._decoder_text(text, target), **options)

    def dla(self, text: str, answer: str, wrong: str | None = None, position: int = -1, target: str | None = None):
        """`LogitAttribution`: what each head and MLP writes toward `answer`'s logit (minus `wrong`'s)."""
        from .inspect import dla
        return dla(self, text, self._decoder_text(text, target), answer=answer, wrong=wrong, position=position)

    def patch(self, clean: str, corrupted: str, answer: str, wrong: str):
        """Activation `Patching` from `clean` into `corrupted` (same length), scored on answer - wrong."""
        from .inspect import patch
        return patch(self, clean, corrupted=corrupted, answer=answer, wrong=wrong)

    def attribute(self, text: str, **options):
        """`InputAttribution` of a classifier's label or the next token to each input token. Options:
        `lmforge.inspect.AttributeConfig` fields (target, method "ig" / "gxi", steps, batch_size)."""
        from .inspect import attribute
        return attribute(self, text, **options)

    def head_scores(self, **options):
        """`HeadScores`: previous-token, induction and entropy score per head on a repeated random
        sequence. Options: `lmforge.inspect.HeadScoresConfig` fields (seq_len, seed, alphabet, kind)."""
        from .inspect import head_scores
        return head_scores(self, **options)

    def _decoder_text(self, text: str, target: str | None) -> str | None:
        """What an encoder-decoder's decoder reads: `target`, by default the greedy translation."""
        if self.config.family == "seq2seq" and target is None:
            return self.translate(text, num_beams=1)
        return target

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
