"""OpenAI's routes: /v1/completions, /v1/chat/completions (generation through the scheduler,
answered whole or streamed), /v1/embeddings and /v1/models.

A generation route reads its body into prompt ids and decoding options, starts the sequences
(`ServerState.start`) and renders their `Reply` with one of the answer classes below, which
shape the same events as one JSON object or as chunks."""

from __future__ import annotations

import dataclasses
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .http import read_json
from .openai_fields import decoding_options
from .protocol import ApiError, choices, completion_prompts, flag, input_texts, prompt_logprobs, stream_options
from .replies import Reply
from .responses import new_id, now, sse, usage
from .state import ServerState, server_state

log = logging.getLogger("lmforge.serve")


class _Answer:
    """A generation request's answer: its id, and the chunks every stream ends with."""
    kind = ""

    def __init__(self, state: ServerState, reply: Reply, prompt_tokens: int, include_usage: bool, prefix: str):
        self.state, self.reply, self.prompt_tokens, self.include_usage = state, reply, prompt_tokens, include_usage
        self.id, self.created = new_id(prefix), now()

    def envelope(self, object_: str, **fields) -> dict:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.state.name, **fields}

    def usage(self) -> dict:
        return usage(self.prompt_tokens, sum(len(s.out_ids) for s in self.reply.seqs))

    def opening(self) -> str:
        return ""

    async def chunks(self):
        try:
            opening = self.opening()
            if opening:
                yield opening
            async for text in self.reply.stream(self.on_token, self.on_finish):
                yield text
            if self.include_usage:
                yield sse(self.envelope(self.kind, choices=[], usage=self.usage()))
        except Exception:           # a bug after the status line went: an error event ends the stream cleanly
            log.exception("500 inside a stream")
            yield sse(ApiError("internal error; the server's log has the details", status=500,
                               kind="server_error").body())
        finally:
            self.reply.cancel_unfinished()
        yield "data: [DONE]\n\n"

    def streamed(self) -> StreamingResponse:
        return StreamingResponse(self.chunks(), media_type="text/event-stream")


class _CompletionAnswer(_Answer):
    kind = "text_completion"

    def __init__(self, state, reply, prompts, texts, n: int, echo: bool, include_usage: bool,
                 prompt_top: int | None = None):
        super().__init__(state, reply, sum(len(p) for p in prompts), include_usage, "cmpl")
        self.prompt_top = prompt_top          # vLLM's prompt_logprobs, when asked
        tokenizer = state.tokenizer
        self.echoed = {s.index: (texts[s.index // n] if isinstance(texts[s.index // n], str)
                                 else tokenizer.decode(prompts[s.index // n])) if echo else "" for s in reply.seqs}
        self.echo, self.sent_echo = echo, set()

    def chunk(self, s, **fields) -> str:
        return sse(self.envelope(self.kind, choices=[{"index": s.index, "text": "", "logprobs": None,
                                                      "finish_reason": None, **fields}]))

    def on_token(self, s, text: str, entry) -> str:
        if s.index not in self.sent_echo:
            self.sent_echo.add(s.index)
            text = self.echoed[s.index] + text
        return self.chunk(s, text=text, logprobs=self.state.formatter.legacy([entry]) if entry is not None else None)

    def on_finish(self, s) -> str:
        return self.chunk(s, finish_reason=s.finish_reason)

    def logprobs(self, s, entries: list) -> dict | None:
        if s.options.logprobs is None:
            return None
        k = s.options.logprobs
        head = [e and e[:2] + (e[2][:k],) for e in s.prompt_logprobs] if self.echo and s.prompt_logprobs else []
        offset = 0 if head else len(self.echoed[s.index])
        return self.state.formatter.legacy(head + entries, s.prompt_ids, offset)

    def whole(self, generated: dict, entries: dict) -> JSONResponse:
        choices_ = [{"index": s.index, "text": self.echoed[s.index] + generated[s.index],
                     "logprobs": self.logprobs(s, entries[s.index]), "finish_reason": s.finish_reason}
                    for s in self.reply.seqs]
        if self.prompt_top is not None:
            for choice, s in zip(choices_, self.reply.seqs):
                choice["prompt_logprobs"] = self.state.formatter.prompt(s.prompt_logprobs, self.prompt_top)
        return JSONResponse(self.envelope(self.kind, choices=choices_, usage=self.usage()))


class _ChatAnswer(_Answer):
    kind = "chat.completion.chunk"

    def __init__(self, state, reply, prompt_tokens: int, include_usage: bool):
        super().__init__(state, reply, prompt_tokens, include_usage, "chatcmpl")

    def chunk(self, choices_: list) -> str:
        return sse(self.envelope(self.kind, choices=choices_))

    def opening(self) -> str:
        return "".join(self.chunk([{"index": s.index, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}]) for s in self.reply.seqs)

    def on_token(self, s, text: str, entry) -> str:
        return self.chunk([{"index": s.index, "delta": {"content": text},
                            "logprobs": self.state.formatter.chat([entry]) if entry is not None else None,
                            "finish_reason": None}])

    def on_finish(self, s) -> str:
        return self.chunk([{"index": s.index, "delta": {}, "logprobs": None, "finish_reason": s.finish_reason}])

    def whole(self, generated: dict, entries: dict) -> JSONResponse:
        formatter = self.state.formatter
        choices_ = [{"index": s.index, "message": {"role": "assistant", "content": generated[s.index]},
                     "logprobs": formatter.chat(entries[s.index]) if s.options.logprobs is not None else None,
                     "finish_reason": s.finish_reason} for s in self.reply.seqs]
        return JSONResponse(self.envelope("chat.completion", choices=choices_, usage=self.usage()))


async def _answer(request: Request, answer: _Answer, stream: bool) -> Response:
    if stream:
        return answer.streamed()
    generated, entries = await answer.reply.collect(request.is_disconnected)
    return answer.whole(generated, entries)


async def completions(request: Request) -> Response:
    state = server_state(request)
    body = await read_json(request)
    state.need_decoder("/v1/completions")
    options = decoding_options(body, chat=False, no_repeat_ngram_size=state.no_repeat_default)
    echo = flag(body, "echo", False)
    n = choices(body)
    stream, include_usage = stream_options(body)
    prompt_top = prompt_logprobs(body, stream)
    score_prompt = _prompt_scoring(state, options.logprobs if echo else None, prompt_top)
    texts = completion_prompts(body)
    state.check_sequences(len(texts) * n)                     # before any prompt is encoded
    prompts = [state.encode(t) if isinstance(t, str) else t for t in texts]
    for i, ids in enumerate(prompts):
        state.check_prompt(ids, "prompt" if len(prompts) == 1 else f"prompt[{i}]")
    reply = state.start(prompts, state.fit(options, max(len(p) for p in prompts)), n, score_prompt)
    answer = _CompletionAnswer(state, reply, prompts, texts, n, echo, include_usage, prompt_top)
    return await _answer(request, answer, stream)


def _prompt_scoring(state: ServerState, echoed: int | None, prompt_top: int | None) -> int | None:
    """How many alternatives to score the prompt's tokens with (None: not scored): what `echo`
    with `logprobs` shows, and vLLM's `prompt_logprobs`."""
    if state.seq2seq and (echoed is not None or prompt_top is not None):
        field = "echo" if echoed is not None else "prompt_logprobs"
        what = "'echo' with 'logprobs' scores" if echoed is not None else "'prompt_logprobs' scores"
        raise ApiError(f"{what} the prompt's tokens, but an encoder-decoder reads its prompt (the source) without "
                       f"predicting it; leave out '{field}'", field)
    wanted = [k for k in (echoed, prompt_top) if k is not None]
    return max(wanted) if wanted else None


async def chat_completions(request: Request) -> Response:
    state = server_state(request)
    body = await read_json(request)
    state.need_decoder("/v1/chat/completions")
    options = decoding_options(body, chat=True, no_repeat_ngram_size=state.no_repeat_default)
    n = choices(body)
    stream, include_usage = stream_options(body)
    ids, stops = state.chat_ids(body)
    state.check_prompt(ids, "messages")
    options = state.fit(options, len(ids))
    reply = state.start([ids], _with_stops(options, stops), n)
    return await _answer(request, _ChatAnswer(state, reply, len(ids), include_usage), stream)


def _with_stops(options, stops: list[str]):
    return dataclasses.replace(options, stop=options.stop + stops)


async def embeddings(request: Request) -> Response:
    state = server_state(request)
    body = await read_json(request)
    if state.config.family != "encoder":
        raise ApiError(f"/v1/embeddings needs an encoder (BERT-style) model; this one is a {state.config.family} "
                       f"model", "model", code="model_not_supported")
    texts = input_texts(body)
    vectors = await state.on_model(state.lm.embed, texts)
    n_tokens = sum(len(state.tokenizer.encode(t)) for t in texts)
    return JSONResponse({"object": "list", "model": state.name, "usage": usage(n_tokens, 0),
                         "data": [{"object": "embedding", "index": i, "embedding": v.tolist()}
                                  for i, v in enumerate(vectors)]})


async def models(request: Request) -> Response:
    state = server_state(request)
    return JSONResponse({"object": "list", "data": [{"id": state.name, "object": "model", "created": state.started,
                                                     "owned_by": "lmforge", "max_model_len": state.config.context_length,
                                                     "family": state.config.family}]})
