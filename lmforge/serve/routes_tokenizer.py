"""The tokenizer and housekeeping routes: /tokenize, /detokenize, /tokenizer_info (vLLM's
shapes), /health and /metrics (Prometheus)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .http import read_json
from .protocol import ApiError, flag
from .state import server_state


async def tokenize(request: Request) -> Response:
    state = server_state(request)
    body = await read_json(request)
    if "messages" in body:
        ids, _ = state.chat_ids(body)
    elif isinstance(body.get("prompt"), str):
        add = flag(body, "add_special_tokens", True)
        ids = state.encode(body["prompt"]) if add else state.tokenizer.encode(body["prompt"])
    else:
        raise ApiError("send 'prompt' (a string) or 'messages'", "prompt")
    out = {"count": len(ids), "max_model_len": state.config.context_length, "tokens": ids}
    if flag(body, "return_token_strs", False):
        out["token_strs"] = [state.prompt_formatter.token(i) for i in ids]
    return JSONResponse(out)


async def detokenize(request: Request) -> Response:
    state = server_state(request)
    body = await read_json(request)
    ids, vocab = body.get("tokens"), state.tokenizer.vocab_size
    if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        raise ApiError("'tokens' must be a list of token ids", "tokens")
    if any(not 0 <= t < vocab for t in ids):
        raise ApiError(f"'tokens' holds an id outside the vocabulary of {vocab}", "tokens")
    return JSONResponse({"prompt": state.tokenizer.decode(ids)})


async def tokenizer_info(request: Request) -> Response:
    state = server_state(request)
    tokenizer = state.tokenizer
    info = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": state.config.context_length,
            "vocab_size": tokenizer.vocab_size, "add_bos_token": tokenizer.add_bos,
            **{f"{role}_token": tok for role, tok in tokenizer.special.items() if tok is not None}}
    if isinstance(tokenizer.extra.get("chat_template"), str):
        info["chat_template"] = tokenizer.extra["chat_template"]
    return JSONResponse(info)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    collected = server_state(request).metrics
    return Response(collected.text(), media_type=collected.content_type)
