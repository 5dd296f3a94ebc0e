"""`lmforge serve`: an OpenAI-compatible HTTP server (Starlette on uvicorn) and the playground page.

Routes: /v1/completions, /v1/chat/completions, /v1/embeddings, /v1/models (a bearer key
when one is set), /tokenize, /detokenize, /tokenizer_info (vLLM's shapes), /health,
/metrics (Prometheus), / (the playground) and the playground's /attention and /classify.
Generation goes through one `Scheduler` (continuous batching); other model work (attention
maps, embeddings, classification) takes the scheduler's lock in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..api import TRANSLATE_DEFAULTS
from ..data.chat import ROLES
from ..errors import LmforgeError
from .metrics import Metrics
from .protocol import (ApiError, LogprobFormatter, chat_messages, completion_prompts, new_id, now, sampling_params,
                       stream_options, usage)
from .prompts import chat_prompt, chat_roles, chat_source, encode_text, json_constraint, source_prompt
from . import ServeArgs
from .scheduler import QueueFull, Scheduler, Sequence

MAX_ATTENTION_TOKENS = 256


class _Mailbox:
    """Hands scheduler events (scheduler thread) to request queues (the event loop's thread).
    Events posted while a delivery is pending ride along with it, so one decode step of 16
    sequences wakes the event loop once, not 16 times."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._pending: list[tuple[asyncio.Queue, tuple]] = []
        self._lock = threading.Lock()

    def post(self, queue: asyncio.Queue, event: tuple) -> None:
        with self._lock:
            self._pending.append((queue, event))
            first = len(self._pending) == 1
        if first:
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        for queue, event in batch:
            queue.put_nowait(event)


class _Events:
    """Scheduler events for one request, handed to its event loop through the server's mailbox."""

    def __init__(self, mailbox: _Mailbox) -> None:
        self.mailbox = mailbox
        self.queue: asyncio.Queue = asyncio.Queue()

    def emit(self, event: tuple) -> None:
        self.mailbox.post(self.queue, event)

    async def next_batch(self) -> list[tuple]:
        """The next event and every other one already waiting (one write to the client for all)."""
        events = [await self.queue.get()]
        while not self.queue.empty():
            events.append(self.queue.get_nowait())
        return events


def create_app(lm, args: ServeArgs) -> Starlette:
    """The server for a loaded `lmforge.Model`."""
    metrics = Metrics()
    config, tokenizer = lm.config, lm.tokenizer
    seq2seq = config.family == "seq2seq"
    out_tokenizer = lm.target_tokenizer        # of the generated text (an encoder-decoder's target side)
    name = args.model_name or (lm.path.name if lm.path is not None else "lmforge")
    scheduler = Scheduler(lm.module, out_tokenizer, args.max_batch_size, args.max_queue, metrics) \
        if config.family in ("decoder", "seq2seq") else None
    formatter = LogprobFormatter(out_tokenizer)
    prompt_formatter = formatter if out_tokenizer is tokenizer else LogprobFormatter(tokenizer)   # /tokenize
    prompt_limit = config.context_length if seq2seq else config.context_length - 1   # a decoder needs a free slot
    no_repeat_default = TRANSLATE_DEFAULTS["no_repeat_ngram_size"] if seq2seq else 0   # as `lmforge translate`
    max_body = int(args.max_body_mb * 1024 * 1024)
    mailbox: _Mailbox | None = None          # made by `lifespan`, on the event loop
    page = resources.files(__package__).joinpath("static", "index.html").read_bytes()

    # ---- plumbing ---------------------------------------------------------------------------
    def error(e: ApiError, route: str) -> JSONResponse:
        metrics.requests.labels(route, str(e.status)).inc()
        headers = {"Retry-After": "1"} if e.status == 503 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    def handler(fn, route: str):
        async def endpoint(request: Request) -> Response:
            try:
                if args.api_key and route.startswith("/v1/"):
                    got = request.headers.get("authorization", "")
                    if got != f"Bearer {args.api_key}":
                        raise ApiError("missing or wrong API key: send 'Authorization: Bearer KEY' with the key the "
                                       "server was started with", status=401, kind="authentication_error",
                                       code="invalid_api_key")
                response = await fn(request)
            except ApiError as e:
                return error(e, route)
            except LmforgeError as e:
                return error(ApiError(str(e)), route)
            metrics.requests.labels(route, str(response.status_code)).inc()
            return response
        return endpoint

    async def read_json(request: Request) -> dict:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            raise ApiError(f"request body of {int(declared)} bytes is over the limit of {max_body} bytes "
                           f"(--max-body-mb)", status=413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise ApiError(f"request body is over the limit of {max_body} bytes (--max-body-mb)", status=413)
            chunks.append(chunk)
        try:
            text = b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ApiError(f"request body is not UTF-8 ({e.reason} at byte {e.start})") from None
        try:
            body = json.loads(text)
        except json.JSONDecodeError as e:
            raise ApiError(f"request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        if not isinstance(body, dict):
            raise ApiError("request body must be a JSON object")
        return body

    def need_decoder(what: str) -> Scheduler:
        if scheduler is None:
            other = "/v1/embeddings" + (" or /classify" if config.labels else "")
            raise ApiError(f"{what} needs a decoder (GPT / Llama) or encoder-decoder model; this one is a "
                           f"{config.family} model (use {other})", code="model_not_supported")
        return scheduler

    def check_prompt(ids: list[int], where: str) -> None:
        if len(ids) > prompt_limit:
            raise ApiError(f"{where} has {len(ids)} tokens but the model's context is {config.context_length}; "
                           f"send at most {prompt_limit} tokens", where, code="context_length_exceeded")
        bad = [t for t in ids if not 0 <= t < config.vocab_size]
        if bad:
            raise ApiError(f"{where} holds token id {bad[0]}, outside the vocabulary of {config.vocab_size}", where)

    def fit(params, prompt_len: int):
        """max_tokens cut to what fits in the context (the reply then ends with finish_reason "length"):
        after a decoder's prompt; after <bos> for an encoder-decoder, whose prompt is elsewhere."""
        room = config.context_length - (1 if seq2seq else prompt_len)
        return _replace(params, max_tokens=max(1, min(params.max_tokens, room)))

    def chat_ids(body: dict) -> tuple[list[int], list[str]]:
        """(prompt ids, stop strings that end the assistant's turn) of a chat body."""
        try:
            if seq2seq:
                return chat_source(tokenizer, chat_messages(body, ROLES)), []
            return chat_prompt(tokenizer, chat_messages(body, chat_roles(tokenizer)))
        except LmforgeError as e:
            raise ApiError(str(e), "messages") from None

    def submit(seqs: list[Sequence]) -> None:
        """Queue a request's sequences; their events then arrive on the request's `_Events`."""
        try:
            scheduler.submit(seqs)
        except QueueFull as e:
            raise ApiError(f"server is busy: {e}", status=503, kind="server_error", code="queue_full") from None

    def sequences(prompts: list[list[int]], params, n: int, json_mode: bool, events: _Events) -> list[Sequence]:
        seqs = []
        for p, ids in enumerate(prompts):
            for j in range(n):
                sp = params if n == 1 or params.seed is None else _replace(params, seed=params.seed + j)
                if json_mode:
                    sp = _replace(sp, constraint=json_constraint(out_tokenizer, scheduler.vocab_size))
                seqs.append(Sequence(ids, sp, events.emit, index=p * n + j))
        return seqs

    async def collect(request: Request, seqs: list[Sequence], events: _Events):
        """Wait for every sequence to finish (non-streaming); cancel them if the client leaves."""
        texts = {s.index: "" for s in seqs}
        entries = {s.index: [] for s in seqs}
        left = len(seqs)
        try:
            while left:
                try:
                    event = await asyncio.wait_for(events.queue.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        raise asyncio.CancelledError from None
                    continue
                kind, s = event[0], event[1]
                if kind == "token":
                    texts[s.index] += event[3]
                    if event[4] is not None:
                        entries[s.index].append(event[4])
                elif kind == "error":
                    raise ApiError(f"generation failed: {event[2]}", status=500, kind="server_error")
                else:
                    left -= 1
                    texts[s.index] = s.picker.text       # decoded whole, as `lmforge generate` gives it
        finally:
            if left:
                scheduler.cancel(seqs)
        return texts, entries

    # ---- generation routes ---------------------------------------------------------------------
    async def completions(request: Request) -> Response:
        body = await read_json(request)
        sched = need_decoder("/v1/completions")
        params, n, json_mode = sampling_params(body, chat=False, default_max_tokens=16,
                                               default_no_repeat_ngram_size=no_repeat_default)
        stream, include_usage = stream_options(body)
        echo = body.get("echo") is True
        if seq2seq and params.echo_logprobs:
            raise ApiError("'echo' with 'logprobs' scores the prompt's tokens, but an encoder-decoder reads its "
                           "prompt (the source) without predicting it; leave out 'echo'", "echo")
        texts = completion_prompts(body)
        encode = source_prompt if seq2seq else encode_text
        prompts = [encode(tokenizer, t) if isinstance(t, str) else t for t in texts]
        for i, ids in enumerate(prompts):
            check_prompt(ids, "prompt" if len(prompts) == 1 else f"prompt[{i}]")
        events = _Events(mailbox)
        seqs = sequences(prompts, fit(params, max(len(p) for p in prompts)), n, json_mode, events)
        submit(seqs)
        rid, created = new_id("cmpl"), now()
        prompt_text = {s.index: (texts[s.index // n] if isinstance(texts[s.index // n], str)
                                 else tokenizer.decode(prompts[s.index // n])) if echo else "" for s in seqs}
        n_prompt = sum(len(p) for p in prompts)

        def logprobs_of(s: Sequence, entries: list) -> dict | None:
            if s.params.logprobs is None:
                return None
            head = s.prompt_logprobs if echo and s.prompt_logprobs is not None else []
            offset = 0 if head else len(prompt_text[s.index])
            return formatter.legacy(head + entries, s.prompt_ids, offset)

        if stream:
            def choice(s: Sequence, **fields) -> str:
                return _sse({"id": rid, "object": "text_completion", "created": created, "model": name,
                             "choices": [{"index": s.index, "text": "", "logprobs": None, "finish_reason": None,
                                          **fields}]})

            sent_echo = set()

            def on_token(s: Sequence, text: str, entry) -> str:
                if s.index not in sent_echo:
                    sent_echo.add(s.index)
                    text = prompt_text[s.index] + text
                return choice(s, text=text, logprobs=formatter.legacy([entry]) if entry is not None else None)

            async def chunks():
                try:
                    async for text in _event_stream(events, len(seqs), on_token,
                                                    lambda s: choice(s, finish_reason=s.finish_reason)):
                        yield text
                    if include_usage:
                        yield _sse({"id": rid, "object": "text_completion", "created": created, "model": name,
                                    "choices": [], "usage": usage(n_prompt, sum(len(s.out_ids) for s in seqs))})
                    yield "data: [DONE]\n\n"
                finally:
                    sched.cancel([s for s in seqs if s.finish_reason is None])
            return StreamingResponse(chunks(), media_type="text/event-stream")

        generated, entries = await collect(request, seqs, events)
        choices = [{"index": s.index, "text": prompt_text[s.index] + generated[s.index],
                    "logprobs": logprobs_of(s, entries[s.index]), "finish_reason": s.finish_reason} for s in seqs]
        return JSONResponse({"id": rid, "object": "text_completion", "created": created, "model": name,
                             "choices": choices, "usage": usage(n_prompt, sum(len(s.out_ids) for s in seqs))})

    async def chat_completions(request: Request) -> Response:
        body = await read_json(request)
        sched = need_decoder("/v1/chat/completions")
        params, n, json_mode = sampling_params(body, chat=True, default_max_tokens=None,
                                               default_no_repeat_ngram_size=no_repeat_default)
        stream, include_usage = stream_options(body)
        ids, stops = chat_ids(body)
        check_prompt(ids, "messages")
        params = _replace(fit(params, len(ids)), stop=params.stop + stops)
        events = _Events(mailbox)
        seqs = sequences([ids], params, n, json_mode, events)
        submit(seqs)
        rid, created = new_id("chatcmpl"), now()

        if stream:
            def chunk(choices, **extra) -> str:
                return _sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": name,
                             "choices": choices, **extra})

            def on_token(s: Sequence, text: str, entry) -> str:
                return chunk([{"index": s.index, "delta": {"content": text},
                               "logprobs": formatter.chat([entry]) if entry is not None else None,
                               "finish_reason": None}])

            def on_finish(s: Sequence) -> str:
                return chunk([{"index": s.index, "delta": {}, "logprobs": None, "finish_reason": s.finish_reason}])

            async def chunks():
                try:
                    yield "".join(chunk([{"index": s.index, "delta": {"role": "assistant", "content": ""},
                                          "logprobs": None, "finish_reason": None}]) for s in seqs)
                    async for text in _event_stream(events, len(seqs), on_token, on_finish):
                        yield text
                    if include_usage:
                        yield chunk([], usage=usage(len(ids), sum(len(s.out_ids) for s in seqs)))
                    yield "data: [DONE]\n\n"
                finally:
                    sched.cancel([s for s in seqs if s.finish_reason is None])
            return StreamingResponse(chunks(), media_type="text/event-stream")

        generated, entries = await collect(request, seqs, events)
        choices = [{"index": s.index, "message": {"role": "assistant", "content": generated[s.index]},
                    "logprobs": formatter.chat(entries[s.index]) if s.params.logprobs is not None else None,
                    "finish_reason": s.finish_reason} for s in seqs]
        return JSONResponse({"id": rid, "object": "chat.completion", "created": created, "model": name,
                             "choices": choices, "usage": usage(len(ids), sum(len(s.out_ids) for s in seqs))})

    # ---- other model work (a worker thread, under the scheduler's lock) --------------------------
    async def on_model(fn, *a, **kw):
        from starlette.concurrency import run_in_threadpool
        lock = scheduler.lock if scheduler is not None else _free_lock
        def locked():
            with lock:
                return fn(*a, **kw)
        return await run_in_threadpool(locked)

    async def embeddings(request: Request) -> Response:
        body = await read_json(request)
        if config.family != "encoder":
            raise ApiError(f"/v1/embeddings needs an encoder (BERT-style) model; this one is a {config.family} "
                           f"model", "model", code="model_not_supported")
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ApiError("'input' must be a string or a non-empty list of strings", "input")
        vectors = await on_model(lm.embed, texts)
        n_tokens = sum(len(tokenizer.encode(t)) for t in texts)
        return JSONResponse({"object": "list", "model": name, "usage": usage(n_tokens, 0),
                             "data": [{"object": "embedding", "index": i, "embedding": v.tolist()}
                                      for i, v in enumerate(vectors)]})

    async def classify(request: Request) -> Response:
        body = await read_json(request)
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ApiError("'input' must be a string or a non-empty list of strings", "input")
        if config.labels:
            return JSONResponse({"kind": "labels", "results": await on_model(lm.classify, texts)})
        if config.family == "encoder":
            vectors = await on_model(lm.embed, texts)
            return JSONResponse({"kind": "similarity", "texts": texts, "similarity": (vectors @ vectors.T).tolist()})
        raise ApiError("/classify needs a classifier or an embedding (encoder) model", code="model_not_supported")

    async def attention(request: Request) -> Response:
        body = await read_json(request)
        text = body.get("text")
        if not isinstance(text, str) or not text:
            raise ApiError("'text' must be a non-empty string", "text")
        kind = body.get("kind", "auto")
        maps, tokens = await on_model(lm.attention_maps, text, kind=kind, max_tokens=MAX_ATTENTION_TOKENS,
                                      with_tokens=True)
        layer = _number_field(body, "layer", 0, maps.shape[0] - 1)
        return JSONResponse({"layers": maps.shape[0], "heads": maps.shape[1], "layer": layer,
                             "queries": tokens[0], "keys": tokens[1],
                             "maps": [[[round(x, 4) for x in row] for row in head] for head in maps[layer].tolist()]})

    # ---- tokenizer and housekeeping routes ------------------------------------------------------
    async def tokenize(request: Request) -> Response:
        body = await read_json(request)
        if "messages" in body:
            ids, _ = chat_ids(body)
        elif isinstance(body.get("prompt"), str):
            add = body.get("add_special_tokens", True)
            encode = source_prompt if seq2seq else encode_text          # the ids the model is given
            ids = encode(tokenizer, body["prompt"]) if add is not False else tokenizer.encode(body["prompt"])
        else:
            raise ApiError("send 'prompt' (a string) or 'messages'", "prompt")
        out = {"count": len(ids), "max_model_len": config.context_length, "tokens": ids}
        if body.get("return_token_strs"):
            out["token_strs"] = [prompt_formatter.token(i) for i in ids]
        return JSONResponse(out)

    async def detokenize(request: Request) -> Response:
        body = await read_json(request)
        ids = body.get("tokens")
        if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise ApiError("'tokens' must be a list of token ids", "tokens")
        if any(not 0 <= t < tokenizer.vocab_size for t in ids):
            raise ApiError(f"'tokens' holds an id outside the vocabulary of {tokenizer.vocab_size}", "tokens")
        return JSONResponse({"prompt": tokenizer.decode(ids)})

    async def tokenizer_info(request: Request) -> Response:
        info = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config.context_length,
                "vocab_size": tokenizer.vocab_size, "add_bos_token": tokenizer.add_bos,
                **{f"{role}_token": tok for role, tok in tokenizer.special.items() if tok is not None}}
        if isinstance(tokenizer.extra.get("chat_template"), str):
            info["chat_template"] = tokenizer.extra["chat_template"]
        return JSONResponse(info)

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "created": started,
                                                         "owned_by": "lmforge", "max_model_len": config.context_length,
                                                         "family": config.family}]})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.text(), media_type=metrics.content_type)

    async def playground(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    started = now()
    routes = [
        Route("/v1/completions", handler(completions, "/v1/completions"), methods=["POST"]),
        Route("/v1/chat/completions", handler(chat_completions, "/v1/chat/completions"), methods=["POST"]),
        Route("/v1/embeddings", handler(embeddings, "/v1/embeddings"), methods=["POST"]),
        Route("/v1/models", handler(models, "/v1/models"), methods=["GET"]),
        Route("/tokenize", handler(tokenize, "/tokenize"), methods=["POST"]),
        Route("/detokenize", handler(detokenize, "/detokenize"), methods=["POST"]),
        Route("/tokenizer_info", handler(tokenizer_info, "/tokenizer_info"), methods=["GET"]),
        Route("/attention", handler(attention, "/attention"), methods=["POST"]),
        Route("/classify", handler(classify, "/classify"), methods=["POST"]),
        Route("/health", handler(health, "/health"), methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
        Route("/", handler(playground, "/"), methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        nonlocal mailbox
        mailbox = _Mailbox(asyncio.get_running_loop())     # the loop that serves the requests
        if scheduler is not None:
            scheduler.start()
        yield
        if scheduler is not None:
            scheduler.shutdown()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.scheduler, app.state.metrics, app.state.model_name = scheduler, metrics, name
    return app


# ---- small helpers -----------------------------------------------------------------------------
class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_free_lock = _NoLock()


def _replace(params, **changes):
    import dataclasses
    return dataclasses.replace(params, **changes)


def _number_field(body: dict, name: str, lo: int, hi: int) -> int:
    value = body.get(name, lo)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ApiError(f"'{name}' must be an integer from {lo} to {hi}, got {value!r}", name)
    return value


async def _event_stream(events: _Events, n_seqs: int, on_token, on_finish):
    """Server-sent-event text for a request's scheduler events until its `n_seqs` sequences have
    finished; the events that arrived together go out in one write. `on_token(seq, text, logprob
    entry)` and `on_finish(seq)` render one chunk each."""
    left = n_seqs
    while left:
        out = []
        for event in await events.next_batch():
            kind, s = event[0], event[1]
            if kind == "token":
                if event[3] or event[4] is not None:
                    out.append(on_token(s, event[3], event[4]))
            elif kind == "error":
                left -= 1
                out.append(_sse({"error": {"message": f"generation failed: {event[2]}", "type": "server_error",
                                           "param": None, "code": None}}))
            else:
                left -= 1
                out.append(on_finish(s))
        if out:
            yield "".join(out)


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
