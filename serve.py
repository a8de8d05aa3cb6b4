"""
A trained model as a local server that speaks the OpenAI API, so the openai SDK and any tool that takes a
base URL can use it.

    python serve.py --out_dir=pretrained/hlm                 # http://127.0.0.1:8000/v1, this machine only
    python serve.py --out_dir=pretrained/poetry --port=8001
    python serve.py --out_dir=out-chinese --ckpt=best.pt
    python serve.py --host=0.0.0.0 --api_key=SECRET          # other machines too, with a key
    python serve.py --help

Routes: GET /v1/models, POST /v1/completions and POST /v1/chat/completions, plain or streamed (Server-Sent
Events, as OpenAI sends them). A character model has no chat template, so a chat's prompt is its messages'
texts, in order and whatever their role, joined by a blank line (the corpora's record separator); the reply
continues the last message. babygpt's own options ride along as extra body fields: top_k, repetition_penalty,
and for a poem form, acrostic and rhyme (sample.py's --form, --acrostic, --rhyme: the reply is then one whole
poem, whatever max_tokens says). A field a request leaves out takes sample.py's default; a completion's
max_tokens defaults to OpenAI's 16, a chat's to --chat_max_tokens. One token is one character, in `usage` too.

One worker thread owns the model. Requests that arrive together with the same sampling settings and prompt
length are decoded as one batch through sample.py's sampler (samples_over); the other batches take turns with
it, one character each, so no stream waits for another to end. A client that hangs up frees its place at once.
"""

import asyncio
import dataclasses
import hmac
import json
import os
import secrets
import socket
import sys
import threading
import time
import uuid

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from babygpt import poetry
import sample
from babygpt.checkpoint import codec
from configurator import configure, settings
from babygpt.errors import UserError, run_main
from babygpt.runtime import LOCAL_HOSTS

# -----------------------------------------------------------------------------
out_dir = "pretrained/hlm"  # the model to serve: a run's out_dir or a shipped model (ckpt.pt and meta.pkl)
ckpt = "ckpt.pt"        # the checkpoint in out_dir: ckpt.pt (latest save) or best.pt (lowest val loss)
host = "127.0.0.1"      # address to listen on; any other (0.0.0.0: every interface) needs --api_key
port = 8000             # port to listen on
api_key = ""            # the key clients send as Authorization: Bearer <key>; required with another --host
max_tokens = 1024       # the most characters one request may ask for (more: HTTP 400)
max_prompt = 4096       # the longest prompt, in characters (longer: HTTP 400)
max_queue = 64          # rows (each request's n, per prompt) waiting or generating at once (more: HTTP 429)
max_batch = 32          # the most rows decoded as one batch; also the most rows one request may ask for
chat_max_tokens = 256   # a chat's max_tokens when it gives none (a char model never says it is done)
device = "auto"         # auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps
dtype = "auto"          # auto: float16 on a CUDA GPU, float32 elsewhere; or float16, bfloat16, float32
# -----------------------------------------------------------------------------
DEFAULTS = settings(globals())

BATCH_WINDOW = 0.02  # s a batch waits after its latest request for others sent at about the same moment
BATCH_WAIT = 0.15    # s the first request of a batch waits at most, however many keep coming
BODY_LIMIT = 1 << 20  # bytes; a longer body is refused before it is parsed (a prompt cap in bytes, roughly)
SAMPLING = ("temperature", "top_k", "top_p", "repetition_penalty", "form", "acrostic", "rhyme")
ROLES = ("system", "developer", "user", "assistant", "tool")
# OpenAI fields babygpt cannot honour: accepted only at their "off" values, anything else is a 400
UNSUPPORTED = {"logprobs": (None, False, 0), "top_logprobs": (None, 0), "logit_bias": (None, {}),
               "presence_penalty": (None, 0), "frequency_penalty": (None, 0), "best_of": (None, 1),
               "suffix": (None, ""), "tools": (None, []), "tool_choice": (None, "none"),
               "response_format": (None, {"type": "text"}), "parallel_tool_calls": (None, True, False)}
IGNORED = ("user", "metadata", "store", "service_tier")  # bookkeeping fields with no effect on the text
COMMON = ("model", "max_tokens", "temperature", "top_p", "n", "seed", "stop", "stream", "stream_options",
          "top_k", "repetition_penalty", "form", "acrostic", "rhyme", *IGNORED, *UNSUPPORTED)
FIELDS = {"completion": {*COMMON, "prompt", "echo"}, "chat": {*COMMON, "messages", "max_completion_tokens"}}


# -----------------------------------------------------------------------------
# errors, in OpenAI's shape: {"error": {"message", "type", "param", "code"}}

class ApiError(Exception):
    """A request the server refuses; becomes an HTTP error with OpenAI's JSON body."""

    def __init__(self, status, message, param=None, code=None, kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind

    def body(self):
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


def error_response(error):
    return JSONResponse(error.body(), status_code=error.status)


def install_error_handlers(app):
    """Every error a client can cause, or the server meets, answers in OpenAI's shape; never a traceback."""

    async def api_error(request, e):
        return error_response(e)

    async def http_error(request, e):  # an unknown URL, a wrong method
        code = {404: "unknown_url", 405: "method_not_allowed"}.get(e.status_code)
        what = f"Unknown request URL: {request.method} {request.url.path}" if e.status_code == 404 else e.detail
        return error_response(ApiError(e.status_code, f"{what}. Routes: GET /v1/models, POST /v1/completions, "
                                                      "POST /v1/chat/completions.", code=code))

    async def invalid(request, e):
        return error_response(ApiError(400, "The request does not match the API.", code="invalid_request"))

    async def crash(request, e):  # the server's own fault: logged on its stderr, the client gets one line
        return error_response(ApiError(500, "The server had an error while processing your request.",
                                       kind="server_error"))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, crash)


# -----------------------------------------------------------------------------
# a request's body, checked as OpenAI checks it: JSON types first, then ranges

def json_type(value):
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


KINDS = {"integer": lambda v: type(v) is int, "number": lambda v: type(v) in (int, float),
         "boolean": lambda v: type(v) is bool, "string": lambda v: type(v) is str}


def get(body, name, kind, default, lo=None, hi=None, above=False, hint=""):
    """body[name] of JSON type kind, at least lo (above: more than lo) and at most hi; absent or null: default."""
    value = body.get(name)
    if value is None:
        return default
    if not KINDS[kind](value):
        raise ApiError(400, f"Invalid type for '{name}': expected {'an' if kind == 'integer' else 'a'} {kind}, "
                            f"but got {json_type(value)} instead.", name, "invalid_type")
    if lo is not None and (value <= lo if above else value < lo):
        raise ApiError(400, f"Invalid '{name}': {value} is below the minimum; expected a value "
                            f"{'>' if above else '>='} {lo}.", name, "invalid_value")
    if hi is not None and value > hi:
        raise ApiError(400, f"Invalid '{name}': {value} is above the maximum; expected a value <= {hi}{hint}.",
                       name, "invalid_value")
    return value


async def read_body(request):
    """The request's JSON object; a body that is too long, not JSON or not an object is a 400 (413)."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > BODY_LIMIT:
            raise ApiError(413, f"The request body is over {BODY_LIMIT:,} bytes.", code="request_too_large")

    def no_constant(name):  # JSON has no NaN or Infinity; Python's parser would take them
        raise ValueError(name)

    try:
        body = json.loads(raw, parse_constant=no_constant)
    except ValueError:
        raise ApiError(400, "We could not parse the JSON body of your request. The body must be a JSON object "
                            "(Content-Type: application/json).", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"The request body must be a JSON object, got {json_type(body)}.", code="invalid_json")
    return body


def check_fields(body, kind, model_id):
    """Unknown fields are refused as OpenAI refuses them; unsupported ones unless off; the model must be ours."""
    for name in body:
        if name not in FIELDS[kind]:
            raise ApiError(400, f"Unrecognized request argument supplied: {name}", name)
        if name in UNSUPPORTED and body[name] not in UNSUPPORTED[name]:
            raise ApiError(400, f"'{name}' is not supported by this server (a character-level babygpt model).",
                           name, "unsupported_parameter")
    model = body.get("model")
    if not isinstance(model, str):
        raise ApiError(400, "you must provide a model parameter (GET /v1/models lists it)", "model")
    if model != model_id:
        raise ApiError(404, f"The model '{model}' does not exist; this server has '{model_id}'.", "model",
                       "model_not_found")


def stop_strings(body):
    """OpenAI's stop: one string or up to 4, none empty."""
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, "Invalid 'stop': expected a non-empty string or an array of up to 4 of them.",
                       "stop", "invalid_value")
    return stop


def prompt_list(body, limit):
    """A completion's prompt: a string or an array of strings, each at most limit characters."""
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ApiError(400, "'prompt' must be a string or a non-empty array of strings (this server reads text, "
                            "not token ids).", "prompt", "invalid_type")
    for p in prompts:
        check_length(p, limit)
    return prompts


def check_length(text, limit):
    if len(text) > limit:
        raise ApiError(400, f"The prompt has {len(text):,} characters; this server takes at most {limit:,} "
                            "(serve.py --max_prompt).", "prompt", "context_length_exceeded")


def message_text(content, i):
    """A message's text: a string, or an array of text parts (OpenAI's content parts); null is empty."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise ApiError(400, f"Invalid 'messages[{i}].content': expected a string or an array of text parts "
                        "(this model reads text only).", f"messages[{i}].content", "invalid_type")


def chat_prompt(messages, limit):
    """A character model has no chat template: the messages' texts in order, whatever their role, joined by
    a blank line (the corpora's own record separator), so the reply continues the last message. A poem
    option then reads the last message as the poem's title."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty array of {role, content} objects.", "messages")
    texts = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ApiError(400, f"Invalid 'messages[{i}].role': expected one of {', '.join(ROLES)}.",
                           f"messages[{i}].role", "invalid_value")
        texts.append(message_text(m.get("content"), i))
    prompt = "\n\n".join(t for t in texts if t)
    check_length(prompt, limit)
    return prompt


def sampling_settings(body):
    """The fields that decide how characters are drawn (requests batch only when these are equal);
    a field left out takes sample.py's default."""
    d = sample.DEFAULTS
    return {"temperature": get(body, "temperature", "number", d["temperature"], 0, 2),
            "top_k": get(body, "top_k", "integer", d["top_k"], 0),
            "top_p": get(body, "top_p", "number", d["top_p"], 0, 1, above=True),
            "repetition_penalty": get(body, "repetition_penalty", "number", d["repetition_penalty"], 0, above=True),
            "form": get(body, "form", "string", ""), "acrostic": get(body, "acrostic", "string", ""),
            "rhyme": get(body, "rhyme", "boolean", False)}


def parse_request(body, kind, cfg, model_id):
    """A checked request: {prompts, n, seed, max_tokens, stops, stream, include_usage, echo, settings}."""
    check_fields(body, kind, model_id)
    if kind == "chat":
        prompts, default_max = [chat_prompt(body.get("messages"), cfg["max_prompt"])], cfg["chat_max_tokens"]
    else:
        prompts, default_max = prompt_list(body, cfg["max_prompt"]), 16  # OpenAI's default for completions
    hint = " (serve.py --max_tokens)"
    length = get(body, "max_completion_tokens", "integer", None, 1, cfg["max_tokens"], hint=hint)
    length = get(body, "max_tokens", "integer", length or default_max, 1, cfg["max_tokens"], hint=hint)
    n = get(body, "n", "integer", 1, 1, cfg["max_batch"], hint=" (serve.py --max_batch)")
    if n * len(prompts) > cfg["max_batch"]:
        raise ApiError(400, f"{len(prompts)} prompts x n={n} is over {cfg['max_batch']} rows (serve.py "
                            "--max_batch); send fewer at once.", "n", "invalid_value")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object.", "stream_options", "invalid_type")
    return {"prompts": prompts, "n": n, "max_tokens": length, "stops": stop_strings(body),
            "seed": get(body, "seed", "integer", secrets.randbelow(2 ** 31), 0, 2 ** 63 - 1 - n),
            "stream": get(body, "stream", "boolean", False), "echo": get(body, "echo", "boolean", False),
            "include_usage": get(options or {}, "include_usage", "boolean", False),
            "settings": sampling_settings(body)}


# -----------------------------------------------------------------------------
# the batcher: one worker thread owns the model and steps batches of compatible rows in turn

@dataclasses.dataclass
class Job:
    """One prompt of a request, with its n rows, on its way through the worker. Row j is choice first + j."""
    settings: dict        # the sampling fields (SAMPLING)
    ids: list             # the prompt's ids, as every row starts
    prompt: str           # the prompt as kept (characters the model never saw left out)
    seeds: list           # one per row: the request's seed + j, as sample.py's sample j
    first: int            # the choice index of row 0
    max_tokens: int
    stops: list
    send: object          # send(event) from the worker thread: ("text", i, s), ("finish", i, why), ("error", msg)
    cancelled: bool = False
    released: bool = False
    arrived: float = 0.0  # time.monotonic() when queued

    def key(self):
        """Rows batch together only with equal settings and prompt length (the model takes no padding)."""
        return len(self.ids), tuple(self.settings[k] for k in SAMPLING)


class RowText:
    """One row's new text on its way to the client. It ends at max_tokens, at a stop string (left out, as
    OpenAI does) or where its poem ends; what might still become a stop string is held back, and so are a
    poem's newlines until more of it follows (its closing blank row is not part of the poem)."""

    def __init__(self, stops, limit, poem):
        self.stops, self.limit, self.poem = stops, limit, poem
        self.text, self.sent, self.steps = "", 0, 0

    def add(self, piece, poem_done=False):
        """The row's next character in; (text to send now, finish reason or None) out."""
        self.steps += 1
        self.text += piece
        hits = [i for i in (self.text.find(s, self.sent) for s in self.stops) if i >= 0]
        if hits:
            self.text = self.text[:min(hits)]
            return self.flush(), "stop"
        if poem_done:
            self.text = self.text.rstrip("\n")
            return self.flush(), "stop"
        if not self.poem and self.steps >= self.limit:
            return self.flush(), "length"
        # the longest end of the text that a stop string starts with: it may yet complete
        held = max((k for s in self.stops for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        if self.poem:
            held = max(held, len(self.text) - len(self.text.rstrip("\n")))
        return self.flush(len(self.text) - held), None

    def flush(self, end=None):
        """The text up to end (default: all of it) not sent yet; it counts as sent now."""
        end = len(self.text) if end is None else end
        out, self.sent = self.text[self.sent:end], max(self.sent, end)
        return out


class Group:
    """Rows of compatible jobs decoded as one batch: one sample.Samples, stepped one character at a time."""

    def __init__(self, jobs, loaded, decode, release):
        self.rows = [(job, job.first + j) for job in jobs for j in range(len(job.seeds))]
        self.release = release  # release(job) once all its rows are done: its places in the queue are free
        poem = any(jobs[0].settings[k] for k in ("form", "acrostic", "rhyme"))
        self.texts = [RowText(job.stops, job.max_tokens, poem) for job, _ in self.rows]
        self.left = {id(job): len(job.seeds) for job in jobs}
        cfg = dict(sample.DEFAULTS, **jobs[0].settings, max_new_tokens=max(job.max_tokens for job in jobs))
        x = torch.tensor([job.ids for job, _ in self.rows], dtype=torch.long, device=loaded[2])  # (S, T)
        self.samples = sample.samples_over(cfg, loaded, decode, x, [job.prompt for job, _ in self.rows],
                                           seeds=[job.seeds[i - job.first] for job, i in self.rows])
        self.steps = self.samples.steps()
        self.finished = [False] * len(self.rows)

    def live(self):
        return any(not done and not job.cancelled for done, (job, _) in zip(self.finished, self.rows))

    def step(self):
        """Decode one character for every row and send it; False once no row wants more."""
        pieces = next(self.steps, None) if self.live() else None
        if pieces is None:  # generation ended (a poem's row ends with its poem, so none is left here)
            for r in range(len(self.rows)):
                self._finish(r, "length")
            self.steps.close()
            return False
        done = self.samples.constraint.done.tolist() if self.samples.constraint is not None else None
        for r, piece in enumerate(pieces):
            job, j = self.rows[r]
            if self.finished[r] or job.cancelled:
                continue
            out, why = self.texts[r].add(piece, done[r] if done else False)
            if out:
                job.send(("text", j, out))
            if why:
                self._finish(r, why)
        return True

    def _finish(self, r, why):
        job, j = self.rows[r]
        if self.finished[r]:
            return
        self.finished[r] = True
        rest = self.texts[r].flush()  # a held start of a stop string that never completed is text
        if rest and not job.cancelled:
            job.send(("text", j, rest))
        if not job.cancelled:
            job.send(("finish", j, why))
        self.left[id(job)] -= 1
        if not self.left[id(job)]:
            self.release(job)


class Batcher:
    """The worker that owns the model. submit() queues a job (or refuses it with a 429 when the queue is full);
    the worker turns the jobs waiting into batches of compatible rows and steps every batch in turn, one
    character each, so a long generation slows the others down but never holds them up."""

    def __init__(self, loaded, decode, max_queue, max_batch):
        self.loaded, self.decode = loaded, decode
        self.max_queue, self.max_batch = max_queue, max_batch
        self.cond = threading.Condition()
        self.pending, self.groups, self.places = [], [], 0

    def submit(self, jobs):
        """Queue a request's jobs, all or none."""
        rows = sum(len(job.seeds) for job in jobs)
        with self.cond:
            if self.places + rows > self.max_queue:
                raise ApiError(429, f"The server is busy: {self.places} of its {self.max_queue} places are taken "
                                    "(serve.py --max_queue); retry shortly.", code="rate_limit_exceeded",
                               kind="requests")
            self.places += rows
            for job in jobs:
                job.arrived = time.monotonic()
            self.pending += jobs
            self.cond.notify()

    def release(self, job):
        """Free a job's places, once, when it ends or its client hangs up."""
        with self.cond:
            if not job.released:
                job.released = True
                self.places -= len(job.seeds)

    def cancel(self, job):
        job.cancelled = True  # the worker skips its rows; a batch of nothing but such rows stops
        self.release(job)

    def run(self):
        while True:
            self.groups += self._admit()
            for group in list(self.groups):
                if not self._step(group):
                    self.groups.remove(group)

    def _admit(self):
        """New batches from the jobs waiting (blocks while there is nothing to do)."""
        with self.cond:
            while not self.pending and not self.groups:
                self.cond.wait()
            # requests that clients send at about one moment gather until none came for BATCH_WINDOW (clients
            # started together reach the server over tens of ms on a busy CPU), at most BATCH_WAIT after the first,
            # then start as one batch: idle, the worker waits for them; busy, it steps the running batches meanwhile
            while self.pending and time.monotonic() < self._deadline():
                if self.groups:
                    return []
                self.cond.wait(max(0.0, self._deadline() - time.monotonic()))
            jobs, self.pending = [j for j in self.pending if not j.cancelled], []
        batches = {}
        for job in jobs:  # in arrival order within a key; a key's batch is cut at max_batch rows
            chunks = batches.setdefault(job.key(), [[]])
            if sum(len(j.seeds) for j in chunks[-1]) + len(job.seeds) > self.max_batch:
                chunks.append([])
            chunks[-1].append(job)
        made = []
        for chunk in (c for chunks in batches.values() for c in chunks):
            try:
                made.append(Group(chunk, self.loaded, self.decode, self.release))
            except Exception as e:
                self._fail(chunk, e)
        return made

    def _deadline(self):
        """When the jobs waiting start as a batch (see _admit)."""
        first, last = self.pending[0].arrived, self.pending[-1].arrived
        return min(last + BATCH_WINDOW, first + BATCH_WAIT)

    def _step(self, group):
        """One character for a batch; False once it is over (done, or failed: its jobs then get an error)."""
        try:
            return group.step()
        except Exception as e:
            self._fail([job for job, _ in group.rows], e)
            return False

    def _fail(self, jobs, e):
        """A bug or an exhausted device: the jobs hit get one error line, the worker goes on serving the others."""
        print(f"error: a batch failed ({type(e).__name__}: {e})", file=sys.stderr, flush=True)
        for job in {id(job): job for job in jobs}.values():
            if not job.cancelled:
                job.send(("error", "The server had an error while generating."))
            self.cancel(job)


# -----------------------------------------------------------------------------
# answers: the jobs of a request, then OpenAI's JSON or its Server-Sent Events

@dataclasses.dataclass
class Served:
    """What the routes need: the settings, the model's name and vocabulary, the worker."""
    cfg: dict
    model_id: str         # the served folder's name, e.g. 'hlm'
    created: int          # the checkpoint's time, as OpenAI's models have one
    meta: dict            # the vocabulary
    batcher: Batcher


def make_jobs(req, meta, send):
    """A request's jobs, one per prompt: the prompt encoded as sample.py encodes it (characters the model never
    saw left out; an empty prompt is a newline, sample.py's default start) and the poem options checked."""
    jobs, n = [], req["n"]
    for i, text in enumerate(req["prompts"]):
        try:
            x, _, kept = sample.prompt_batch(text or "\n", meta, 1, "cpu", warn=lambda line: None)  # (1, T)
            s = req["settings"]
            poetry.constraint_for(meta, s["form"], s["acrostic"], s["rhyme"], kept)  # the refusals sample.py gives
        except UserError as e:
            field = next((k for k in ("prompt", "acrostic", "form") if k in str(e)), None)
            raise ApiError(400, str(e), field) from None
        jobs.append(Job(req["settings"], x[0].tolist(), kept, [req["seed"] + j for j in range(n)], i * n,
                        req["max_tokens"], req["stops"], send))
    return jobs


async def start(req, served):
    """Queue a request's jobs; returns them and the queue their events arrive on."""
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()

    def send(event):  # called from the worker thread
        try:
            loop.call_soon_threadsafe(queue.put_nowait, event)
        except RuntimeError:  # the loop has closed: the server is shutting down
            pass

    jobs = await run_in_threadpool(make_jobs, req, served.meta, send)  # the poem tables take a moment
    served.batcher.submit(jobs)
    return jobs, queue


def head(kind, served):
    prefix, obj = ("chatcmpl", "chat.completion") if kind == "chat" else ("cmpl", "text_completion")
    return {"id": f"{prefix}-{uuid.uuid4().hex[:24]}", "object": obj, "created": int(time.time()),
            "model": served.model_id}


def usage(jobs, texts):
    """Characters counted as tokens: each prompt once (as the model kept it), every choice's text."""
    prompt = sum(len(job.prompt) for job in jobs)
    done = sum(len(t) for t in texts)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


async def next_event(queue):
    event = await queue.get()
    if event[0] == "error":
        raise ApiError(500, event[1], kind="server_error")
    return event


async def collect(kind, req, served, jobs, queue):
    """The whole answer as one JSON object, once every choice has finished."""
    rows = len(req["prompts"]) * req["n"]
    texts, reasons = [""] * rows, [None] * rows
    try:
        while None in reasons:
            event, i, value = await next_event(queue)
            if event == "text":
                texts[i] += value
            else:
                reasons[i] = value
    finally:
        for job in jobs:  # done, or the handler was interrupted: either way their places are free
            served.batcher.cancel(job)
    if kind == "chat":
        choices = [{"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None,
                    "finish_reason": r} for i, (t, r) in enumerate(zip(texts, reasons))]
    else:
        echo = [req["prompts"][i // req["n"]] if req["echo"] else "" for i in range(rows)]
        choices = [{"index": i, "text": e + t, "logprobs": None, "finish_reason": r}
                   for i, (e, t, r) in enumerate(zip(echo, texts, reasons))]
    return {**head(kind, served), "choices": choices, "usage": usage(jobs, texts)}


def chunk(top, kind, index, text="", finish=None, role=False):
    """One Server-Sent Event as OpenAI writes it: a text_completion, or a chat.completion.chunk with a delta."""
    if kind == "chat":
        delta = {"role": "assistant", "content": ""} if role else {"content": text} if text else {}
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        top = dict(top, object="chat.completion.chunk")
    else:
        choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
    return sse({**top, "choices": [choice]})


def sse(obj):
    """One event: a data line of compact JSON, as OpenAI sends them (characters as they are, in UTF-8)."""
    return "data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n"


async def events(kind, req, served, jobs, queue):
    """The answer as Server-Sent Events: each character as it comes (one character is one token, so no
    character is ever split), each choice's finish, usage if asked for, then [DONE]."""
    rows, top = len(req["prompts"]) * req["n"], head(kind, served)
    texts, left = [""] * rows, rows
    for i in range(rows):  # OpenAI's first chunk of a chat names the role; echo sends the prompt first
        if kind == "chat" or req["echo"]:
            yield chunk(top, kind, i, text=req["prompts"][i // req["n"]], role=kind == "chat")
    try:
        while left:
            event, i, value = await next_event(queue)
            if event == "text":
                texts[i] += value
                yield chunk(top, kind, i, text=value)
            else:
                left -= 1
                yield chunk(top, kind, i, finish=value)
    except ApiError as e:
        yield sse(e.body())
        return
    if req["include_usage"]:
        last = dict(top, object="chat.completion.chunk") if kind == "chat" else top
        yield sse({**last, "choices": [], "usage": usage(jobs, texts)})
    yield "data: [DONE]\n\n"


async def answer(kind, request, served):
    """A completion or a chat: check the body, queue its rows, answer plain or streamed."""
    req = parse_request(await read_body(request), kind, served.cfg, served.model_id)
    jobs, queue = await start(req, served)
    if not req["stream"]:
        return JSONResponse(await collect(kind, req, served, jobs, queue))
    # the task runs when the stream ends, or when the client hangs up mid-stream: its places are free then
    free = BackgroundTask(lambda: [served.batcher.cancel(job) for job in jobs])
    return StreamingResponse(events(kind, req, served, jobs, queue), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}, background=free)


# -----------------------------------------------------------------------------
# the app and the command

class KeyCheck:
    """ASGI middleware: every request must carry Authorization: Bearer <api_key>, else OpenAI's 401."""

    def __init__(self, app, api_key):
        self.app, self.expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not hmac.compare_digest(dict(scope["headers"]).get(b"authorization", b""),
                                                               self.expected):
            refusal = ApiError(401, "Incorrect API key provided. Send the server's --api_key as "
                                    "Authorization: Bearer <key>.", code="invalid_api_key")
            return await error_response(refusal)(scope, receive, send)
        await self.app(scope, receive, send)


def build_app(served):
    """The FastAPI app: the three routes, the error handlers and, with an api_key, the key check."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)  # no pages that load scripts from the web
    install_error_handlers(app)
    if served.cfg["api_key"]:
        app.add_middleware(KeyCheck, api_key=served.cfg["api_key"])
    card = {"id": served.model_id, "object": "model", "created": served.created, "owned_by": "babygpt"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{name}")
    async def model(name: str):
        if name != served.model_id:
            raise ApiError(404, f"The model '{name}' does not exist; this server has '{served.model_id}'.",
                           "model", "model_not_found")
        return card

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await answer("completion", request, served)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await answer("chat", request, served)

    return app


def check_launch(cfg):
    """Refuse settings that would expose the model or cannot work, before anything is loaded."""
    if cfg["host"] not in LOCAL_HOSTS and not cfg["api_key"]:
        raise UserError(f"--host={cfg['host']} lets other machines use this model; add --api_key=SECRET (clients "
                        f"send Authorization: Bearer SECRET), or keep the default host and use an SSH tunnel: "
                        f"ssh -L {cfg['port']}:127.0.0.1:{cfg['port']} user@this-host")
    if not 0 < cfg["port"] < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {cfg['port']}")
    for key in ("max_tokens", "max_prompt", "max_queue", "max_batch", "chat_max_tokens"):
        if cfg[key] < 1:
            raise UserError(f"--{key} must be at least 1, got {cfg[key]}")
    if cfg["max_batch"] > cfg["max_queue"] or cfg["chat_max_tokens"] > cfg["max_tokens"]:
        raise UserError(f"--max_batch ({cfg['max_batch']}) must be at most --max_queue ({cfg['max_queue']}) and "
                        f"--chat_max_tokens ({cfg['chat_max_tokens']}) at most --max_tokens ({cfg['max_tokens']})")


def listen(host, port):
    """The server's socket, bound now: a port in use is one line before the model is loaded."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port") from None
    return sock


def load(cfg):
    """The model, once, through sample.py's loader, and the worker that owns it."""
    warn = lambda line: print(line, file=sys.stderr)  # noqa: E731
    settings_ = dict(sample.DEFAULTS, out_dir=cfg["out_dir"], ckpt=cfg["ckpt"], device=cfg["device"],
                     dtype=cfg["dtype"])
    loaded = sample.load_for_sampling(settings_, warn)
    meta = loaded[1]
    if meta is None:  # a BPE token can be part of a character: streaming would split characters
        raise UserError(f"{cfg['out_dir']} is a GPT-2 BPE model; serve.py serves character models (with meta.pkl)")
    batcher = Batcher(loaded, codec(meta)[1], cfg["max_queue"], cfg["max_batch"])
    threading.Thread(target=batcher.run, name="batcher", daemon=True).start()
    created = int(os.path.getmtime(os.path.join(cfg["out_dir"], cfg["ckpt"])))
    return Served(cfg, os.path.basename(os.path.abspath(cfg["out_dir"])), created, meta, batcher)


def main():
    cfg = configure(DEFAULTS, sys.argv[1:], __file__)
    if cfg is None:
        return
    check_launch(cfg)
    sock = listen(cfg["host"], cfg["port"])
    served = load(cfg)
    server = uvicorn.Server(uvicorn.Config(build_app(served), log_level="warning", timeout_graceful_shutdown=3))
    print(f"babygpt server: http://{cfg['host']}:{cfg['port']}/v1, model '{served.model_id}' "
          f"(Ctrl-C stops it)", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    run_main(main)
