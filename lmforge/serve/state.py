"""`ServerState`: everything one server holds — the model, its scheduler, its limits, its
metrics — in one object on `app.state.server`, and the steps every generation route shares
(check a prompt, fit max_tokens into the context, start the sequences)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from importlib import resources

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..data.chat import ROLES
from ..errors import LmforgeError
from ..generate import GenerationConfig
from ..generate.seq2seq import TRANSLATE_DEFAULTS
from ..options import UINT64_MAX
from .config import ServeConfig
from .metrics import Metrics
from .prompts import chat_prompt, chat_roles, chat_source, encode_text, json_constraint, source_prompt
from .protocol import ApiError, chat_messages, text_field
from .replies import Mailbox, Reply
from .responses import LogprobFormatter, now
from .scheduler import QueueFull, Scheduler, Sequence

log = logging.getLogger("lmforge.serve")


@dataclass
class ServerState:
    lm: object                           # the loaded `lmforge.Model`
    settings: ServeConfig
    name: str                            # the model id clients see
    scheduler: Scheduler | None          # decoders and encoder-decoders; None for encoders
    metrics: Metrics = field(default_factory=Metrics)
    started: int = field(default_factory=now)
    mailbox: Mailbox | None = None       # made by the app's lifespan, on the loop that serves requests
    draining: bool = False               # shutting down: running requests finish, new ones get 503
    model_lock: threading.Lock = field(default_factory=threading.Lock)   # no scheduler: one model job at a time

    @classmethod
    def of(cls, lm, settings: ServeConfig) -> "ServerState":
        name = settings.model_name or (lm.path.name if lm.path is not None else "lmforge")
        state = cls(lm, settings, name, None)
        if lm.config.family in ("decoder", "seq2seq"):
            state.scheduler = Scheduler(lm.module, lm.target_tokenizer, settings.max_batch_size, settings.max_queue,
                                        state.metrics, compile=settings.compile)
        return state

    def __post_init__(self) -> None:
        lm = self.lm
        self.config, self.tokenizer = lm.config, lm.tokenizer
        self.out_tokenizer = lm.target_tokenizer        # of the generated text (an encoder-decoder's target side)
        self.seq2seq = self.config.family == "seq2seq"
        self.formatter = LogprobFormatter(self.out_tokenizer)
        self.prompt_formatter = self.formatter if self.out_tokenizer is self.tokenizer \
            else LogprobFormatter(self.tokenizer)                                  # /tokenize shows the prompt side
        context = self.config.context_length
        self.prompt_limit = context if self.seq2seq else context - 1    # a decoder needs a free slot
        self.no_repeat_default = TRANSLATE_DEFAULTS["no_repeat_ngram_size"] if self.seq2seq else 0  # as translate
        self.max_body = int(self.settings.max_body_mb * 1024 * 1024)
        self.page = resources.files(__package__).joinpath("static", "index.html").read_bytes()

    # ---- prompts ------------------------------------------------------------------------------
    def need_decoder(self, what: str) -> Scheduler:
        if self.scheduler is None:
            other = "/v1/embeddings" + (" or /classify" if self.config.labels else "")
            raise ApiError(f"{what} needs a decoder (GPT / Llama) or encoder-decoder model; this one is a "
                           f"{self.config.family} model (use {other})", code="model_not_supported")
        return self.scheduler

    def encode(self, text: str) -> list[int]:
        """A text prompt's ids, as the model is given them (an encoder-decoder's: its source)."""
        return (source_prompt if self.seq2seq else encode_text)(self.tokenizer, text)

    def check_prompt(self, ids: list[int], where: str) -> None:
        config = self.config
        if len(ids) > self.prompt_limit:
            raise ApiError(f"{where} has {len(ids)} tokens but the model's context is {config.context_length}; "
                           f"send at most {self.prompt_limit} tokens", where, code="context_length_exceeded")
        bad = [t for t in ids if not 0 <= t < config.vocab_size]
        if bad:
            raise ApiError(f"{where} holds token id {bad[0]}, outside the vocabulary of {config.vocab_size}", where)

    def chat_ids(self, body: dict) -> tuple[list[int], list[str]]:
        """(prompt ids, stop strings that end the assistant's turn) of a chat body."""
        try:
            if self.seq2seq:
                return chat_source(self.tokenizer, chat_messages(body, ROLES)), []
            return chat_prompt(self.tokenizer, chat_messages(body, chat_roles(self.tokenizer)))
        except LmforgeError as e:
            raise ApiError(str(e), "messages") from None

    # ---- inspections ---------------------------------------------------------------------------
    @property
    def inspect_limit(self) -> int:
        """Tokens an inspected text may hold: --max-inspect-tokens, within the context (room left
        for the <bos> / <eos> a family's layout adds)."""
        return min(self.settings.max_inspect_tokens, self.config.context_length - 2)

    def inspected(self, body: dict, name: str, required: bool = True, target_side: bool = False) -> str | None:
        """A text field an inspection reads (`target_side`: an encoder-decoder's decoder text)."""
        value = text_field(body, name, required)
        if value is not None:
            self.check_inspected(value, name, target_side)
        return value

    def check_inspected(self, value: str, name: str, target_side: bool = False) -> None:
        """400 past `inspect_limit` tokens (of the target tokenizer on the `target_side`)."""
        n = len((self.out_tokenizer if target_side else self.tokenizer).encode(value))
        if n > self.inspect_limit:
            raise ApiError(f"'{name}' has {n} tokens; inspections here take at most {self.inspect_limit} "
                           f"(--max-inspect-tokens {self.settings.max_inspect_tokens}, within the model's context of "
                           f"{self.config.context_length})", name, code="context_length_exceeded")

    # ---- generation ---------------------------------------------------------------------------
    def fit(self, options: GenerationConfig, prompt_len: int) -> GenerationConfig:
        """max_tokens cut to what fits in the context (the reply then ends with finish_reason "length"):
        after a decoder's prompt; after <bos> for an encoder-decoder, whose prompt is elsewhere."""
        room = self.config.context_length - (1 if self.seq2seq else prompt_len)
        return dataclasses.replace(options, max_new_tokens=max(1, min(options.max_new_tokens, room)))

    def check_sequences(self, count: int) -> None:
        """A request of more sequences than the queue holds could never start: 400, not 503."""
        if count > self.settings.max_queue:
            raise ApiError(f"the request asks for {count} sequences (prompts x n) but this server queues at most "
                           f"{self.settings.max_queue} (--max-queue); send fewer at a time", "prompt")

    def start(self, prompts: list[list[int]], options: GenerationConfig, n: int, score_prompt: int | None = None
              ) -> Reply:
        """Queue `n` sequences per prompt (choice j of a seeded request samples with seed + j, modulo
        2**64); their events arrive on the returned Reply. `score_prompt`: also score the prompt's
        tokens, with that many alternatives. 503 when the queue is full or the server is shutting down."""
        self.check_sequences(len(prompts) * n)
        if self.draining:
            raise ApiError("server is shutting down; retry on another replica or after it restarts", status=503,
                           kind="server_error", code="shutting_down")
        reply = Reply(self.mailbox, self.scheduler, self.settings.max_stream_backlog)
        for p, ids in enumerate(prompts):
            for j in range(n):
                opts = options if n == 1 or options.seed is None else \
                    dataclasses.replace(options, seed=(options.seed + j) % (UINT64_MAX + 1))
                json_state = json_constraint(self.out_tokenizer, self.scheduler.vocab_size) if opts.json_mode else None
                reply.seqs.append(Sequence(ids, opts, reply.emit, index=p * n + j, json_state=json_state,
                                           score_prompt=score_prompt))
        try:
            self.scheduler.submit(reply.seqs)
        except QueueFull as e:
            raise ApiError(f"server is busy: {e}", status=503, kind="server_error", code="queue_full") from None
        return reply

    async def drain(self, timeout: float, give_up=lambda: False) -> None:
        """Shutting down: new generation requests get 503, the running and waiting sequences get
        `timeout` seconds to finish (unless `give_up()`: a second Ctrl-C), then the rest end
        ("cancelled"), their readers told. Logs one line when it starts and one when it ends."""
        self.draining = True
        scheduler = self.scheduler
        busy = 0 if scheduler is None else scheduler.running + scheduler.queue_depth
        log.info("shutting down: %d sequences running or waiting get up to %g s to finish (--shutdown-timeout)",
                 busy, timeout)
        t0 = time.monotonic()
        while busy and scheduler.running + scheduler.queue_depth and time.monotonic() - t0 < timeout \
                and not give_up():
            await asyncio.sleep(0.02)
        left = 0 if scheduler is None else scheduler.running + scheduler.queue_depth
        if left:
            scheduler.end_all()
        log.info("shut down after %.1f s: %d sequences finished, %d cancelled", time.monotonic() - t0,
                 busy - left, left)

    # ---- other model work ----------------------------------------------------------------------
    async def on_model(self, fn, *args, **kwargs):
        """`fn(*args, **kwargs)` on the model: a job the scheduler runs between two decode steps
        (`Scheduler.between_steps`); without a scheduler (an encoder), in a worker thread, one at
        a time (hook contexts are not thread-safe)."""
        if self.scheduler is not None:
            return await asyncio.wrap_future(self.scheduler.between_steps(lambda: fn(*args, **kwargs)))

        def alone():
            with self.model_lock:
                return fn(*args, **kwargs)
        return await run_in_threadpool(alone)


def server_state(request: Request) -> ServerState:
    return request.app.state.server
