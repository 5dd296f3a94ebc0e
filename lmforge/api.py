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

import dataclasses
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .errors import LmforgeError, ModelDirError
from .modeldir import CONFIG_FILE, WEIGHTS_FILE, check_model_dir, load_weights_into, read_weights
from .tokenizers import Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise LmforgeError(f"dtype={dtype!r} is unknown; use auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def read_model_dir(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor], Tokenizer, str]:
    """(config, weights, tokenizer, source name) of an lmforge model directory or a Hugging Face
    one (converted through `lmforge.interop`'s key tables). Tensors are read, not yet placed."""
    from .adapt.lora import is_adapter_dir
    from .interop import is_hf_dir, read_hf
    path = Path(path)
    if is_hf_dir(path):
        config, weights, tokenizer, _ = read_hf(path)
        return config, weights, tokenizer, str(path)
    if is_adapter_dir(path):
        raise ModelDirError(f"{path} holds LoRA adapters, not a whole model; merge them into their base first "
                            f"(`lmforge merge-lora {path} MERGED_DIR`) and use MERGED_DIR")
    path = check_model_dir(path, (CONFIG_FILE, WEIGHTS_FILE))
    weights, _ = read_weights(path / WEIGHTS_FILE)
    return ModelConfig.load(path / CONFIG_FILE), weights, Tokenizer.load(path), str(path / WEIGHTS_FILE)


def build_with_weights(config: ModelConfig, weights: dict[str, torch.Tensor], source: str,
                       optional: tuple[str, ...] = ()) -> torch.nn.Module:
    """The model of `config` holding `weights`, materialised once: built on the meta device, the
    tensors assigned. Parameters under `optional` prefixes (a new head) may be missing and are
    initialised as in a fresh model."""
    from .model import build_model
    from .model.blocks import init_weights
    with torch.device("meta"):
        model = build_model(config)
    load_weights_into(model, weights, source, optional)
    for prefix in optional:                       # a new head is still on meta: initialise it as a fresh model would
        head = model.get_submodule(prefix.rstrip("."))
        if any(p.device.type == "meta" for p in head.parameters()):
            init_weights(head.to_empty(device="cpu"), config)
    _materialise_buffers(model)
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None,
               **config_overrides: Any) -> tuple[torch.nn.Module, ModelConfig, Tokenizer]:
    """(module, config, tokenizer) from an lmforge or Hugging Face model directory; a LoRA
    directory loads as its base model with the adapters merged in."""
    from .adapt.lora import ADAPTER_FILE, is_adapter_dir, load_lora_model, merge_lora
    path = Path(path)
    if is_adapter_dir(path):
        check_model_dir(path, (CONFIG_FILE, ADAPTER_FILE))
        model, config, tokenizer, _ = load_lora_model(path, device=device, dtype=dtype, **config_overrides)
        return merge_lora(model).eval(), config, tokenizer
    config, weights, tokenizer, source = read_model_dir(path)
    if config_overrides:
        config = dataclasses.replace(config, **config_overrides)
    model = build_with_weights(config, weights, source)
    del weights                        # the model owns the tensors now: a dtype cast below frees them one by one
    device = torch.device(device)
    model = model.to(device=device, dtype=resolve_dtype(dtype, device)).eval()
    return model, config, tokenizer


def _materialise_buffers(model: torch.nn.Module) -> None:
    """After building on meta and assigning loaded weights: compute the non-persistent buffers
    (RoPE / sinusoidal tables, via each module's `init_buffers`) and re-tie shared weights."""
    for module in model.modules():
        if hasattr(module, "init_buffers"):
            module.init_buffers()
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    assert not leftover, f"tensors left on the meta device after loading: {leftover}"


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
                               draft=self._draft_module(draft))
        texts = [c.text for c in completions]
        return texts[0] if isinstance(prompt, str) else texts

    def classify(self, texts: str | list[str], pairs: str | list[str] | None = None,
                 batch_size: int = 64) -> dict[str, Any] | list[dict[str, Any]]:
        """For each text: {"label": the most likely class, "score": its probability, "probs":
        {label: probability}} (a classifier model directory; `pairs` for sentence-pair tasks)."""
        from .data.classify import predict_proba
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        pairs = [pairs] if isinstance(pairs, str) else pairs
        probs = predict_proba(self.module, self.tokenizer, texts, pairs, batch_size=batch_size)
        labels = self.config.labels
        out = [{"label": labels[int(p.argmax())], "score": float(p.max()),
                "probs": {lab: float(q) for lab, q in zip(labels, p)}} for p in probs]
        return out[0] if single else out

    def embed(self, texts: str | list[str], pooling: str = "auto", normalize: bool = True,
              batch_size: int = 64) -> torch.Tensor:
        """Sentence embeddings: (N, d) float32 vectors for a list of texts, (d,) for one text;
        pooled by `pooling` (auto, mean, cls, last; see `lmforge.embed`) and of unit length
        when `normalize`, so `a @ b` is the cosine similarity."""
        from .embed import embed_texts
        single = isinstance(texts, str)
        vectors = embed_texts(self.module, self.tokenizer, [texts] if single else list(texts), pooling, normalize,
                              batch_size)
        return vectors[0] if single else vectors

    def translate(self, texts: str | list[str], num_beams: int = 4, max_new_tokens: int | None = None,
                  length_penalty: float = 1.0, batch_size: int = 32) -> str | list[str]:
        """Translate (or summarise) with an encoder-decoder model directory: greedy with
        num_beams=1, else beam search over the KV cache."""
        from .generate.seq2seq import translate
        single = isinstance(texts, str)
        out = translate(self.module, self.tokenizer, self.target_tokenizer, [texts] if single else list(texts),
                        num_beams=num_beams, max_new_tokens=max_new_tokens, length_penalty=length_penalty,
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
        session = Chat(self.module, self.tokenizer, system, GenerationConfig(**options), self._draft_module(draft))
        session.messages = turns[:-1]
        return session.reply(turns[-1]["content"])

    def _draft_module(self, draft: "Model | None"):
        if draft is None:
            return None
        from .generate.speculative import check_draft
        check_draft(self.tokenizer, draft.tokenizer, f"the draft model {draft.path}")
        return draft.module

    def perplexity(self, text: str, stride: int | None = None, batch_size: int = 8) -> dict[str, float]:
        from .evaluate.perplexity import perplexity
        return perplexity(self.module, self.tokenizer, text, stride=stride, batch_size=batch_size)

    def save(self, directory: str | Path, format: str = "lmforge", overwrite: bool = False,
             inputs: list[tuple[str, str | Path | None]] = ()) -> Path:
        """Write a model directory; format="hf" writes one that `transformers` loads. The directory
        appears whole or not at all; it must not be this model's own directory or one of `inputs`,
        and one holding anything is replaced only with `overwrite` (see `lmforge.safety`)."""
        from .modeldir import save_weights, state_dict_for_save
        from .safety import staged_output
        inputs = [("the model's own directory", self.path), *inputs]
        if format == "hf":
            from .interop import write_hf
            write_hf(self.config, state_dict_for_save(self.module), self.tokenizer, directory, overwrite=overwrite,
                     inputs=inputs)
            return Path(directory)
        if format != "lmforge":
            raise LmforgeError(f"format={format!r} is unknown; use lmforge or hf")
        with staged_output(directory, inputs=inputs, overwrite=overwrite, out_name="the output directory") as d:
            self.config.save(d / CONFIG_FILE)
            save_weights(self.module, d / WEIGHTS_FILE)
            self.tokenizer.save(d)
            if self.target_tokenizer is not self.tokenizer:
                from .data.pairs import TARGET_TOKENIZER_DIR
                self.target_tokenizer.save(d / TARGET_TOKENIZER_DIR)
        return Path(directory)

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.module.parameters())
        return f"Model({self.path}, family={self.config.family}, params={n / 1e6:.2f}M, {self.tokenizer})"


def load(path: str | Path, device: str = "auto", dtype: str | None = None) -> Model:
    """Load a model directory — lmforge's or a Hugging Face GPT-2 / Llama / BERT one — for inference
    (on GPU when there is one, unless device says), its weights laid out for fast inference
    on that device (`model.inference_layout`)."""
    from .model import inference_layout
    from .train.trainer import resolve_device
    dev = resolve_device(device)
    module, config, tokenizer = load_model(path, dev, dtype)
    return Model(inference_layout(module, dev), config, tokenizer, Path(path))
