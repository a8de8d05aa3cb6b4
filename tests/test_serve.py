"""
serve.py through the official openai client, against live servers on 127.0.0.1 (no other network): the
shipped poetry model for models, completions, chat, streams, concurrency, seeds and a 藏头诗; a tiny model
written here, with small caps and an API key, for the 429, a client that hangs up and the key check.
Run: OMP_NUM_THREADS=1 python -m pytest tests/test_serve.py
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import REPO, assert_user_error, free_port, run, wait_for_server, write_dataset

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
from openai.types import Completion  # noqa: E402
from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: E402

from babygpt import checkpoint as ck  # noqa: E402
from babygpt import poetry  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

POETRY = os.path.join(REPO, "pretrained", "poetry")
KEY = "test-key"


@contextlib.contextmanager
def serving(out_dir, log_path, *args, key=""):
    """python serve.py --out_dir=... on a free localhost port, as a user starts it, its output in log_path;
    yields the base URL (http://127.0.0.1:PORT/v1) once GET /v1/models answers. Stopped (SIGTERM) at the end."""
    port = free_port()
    log = open(log_path, "w", encoding="utf-8")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "serve.py"), f"--out_dir={out_dir}", f"--port={port}",
                             *args, *([f"--api_key={key}"] if key else [])], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    def up():
        try:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return httpx.get(f"{url}/models", headers=headers, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False
    try:
        wait_for_server(proc, up, log_path, "serve.py")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def poems(tmp_path_factory):
    with serving(POETRY, tmp_path_factory.mktemp("serve") / "poetry.log") as url:
        yield url, openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A random 1-layer model on the test corpus's characters, saved as train.py saves a run."""
    folder = str(tmp_path_factory.mktemp("serve") / "tiny")
    meta = write_dataset(folder)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=meta["vocab_size"]))
    ck.save_checkpoint(folder, {"model": model.state_dict(), "model_args": ck.saved_model_args(model.config),
                                "iter_num": 0, "best_val_loss": 9.0, "config": {"dataset": folder}})
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_run):
    """The tiny model served with room for 2 rows and a key."""
    folder = tiny_run
    caps = ["--max_queue=2", "--max_batch=2", "--max_tokens=1000000", "--chat_max_tokens=8", "--max_prompt=50"]
    with serving(folder, f"{folder}.log", *caps, key=KEY) as url:
        yield url, openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=60)


def sse_lines(url, path, body, key="unused"):
    """The raw Server-Sent Events of a streamed request: each data line's text, [DONE] included."""
    with httpx.stream("POST", f"{url}{path}", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=120) as r:
        assert r.status_code == 200, f"{path} answered {r.status_code}: {r.read()!r}"
        assert r.headers["content-type"].startswith("text/event-stream"), f"not SSE: {r.headers}"
        raw = r.read().decode("utf-8")
    events = raw.split("\n\n")
    assert events[-1] == "", f"the stream should end with a blank line: {raw[-200:]!r}"
    assert all(e.startswith("data: ") for e in events[:-1]), f"every event should be one data line: {raw[:500]!r}"
    return [e[len("data: "):] for e in events[:-1]]


# -----------------------------------------------------------------------------
# the poetry model: what a user of the SDK sees

def test_models_lists_the_served_folder(poems):
    url, client = poems
    models = client.models.list().data
    assert [m.id for m in models] == ["poetry"], f"one model named after its folder, got {models}"
    assert client.models.retrieve("poetry").id == "poetry", "GET /v1/models/poetry should answer"


def test_completion_and_chat(poems):
    url, client = poems
    c = client.completions.create(model="poetry", prompt="春日", max_tokens=20, seed=1)
    Completion.model_validate(c.model_dump())
    text = c.choices[0].text
    assert len(text) == 20 and c.choices[0].finish_reason == "length", f"20 characters then 'length': {c}"
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (2, 20, 22), \
        f"usage should count characters: {c.usage}"
    chat = client.chat.completions.create(model="poetry", max_tokens=12, seed=1, messages=[
        {"role": "system", "content": "你是诗人"}, {"role": "user", "content": [{"type": "text", "text": "秋夜"}]}])
    ChatCompletion.model_validate(chat.model_dump())  # the SDK builds without checking; this checks every field
    reply = chat.choices[0].message
    assert reply.role == "assistant" and 0 < len(reply.content) <= 12, f"a reply of up to 12 characters: {chat}"
    assert chat.usage.prompt_tokens == len("你是诗人\n\n秋夜"), \
        f"the chat's prompt is its messages joined by a blank line: {chat.usage}"
    e = client.completions.create(model="poetry", prompt="春日", max_tokens=5, seed=1, echo=True, n=2)
    assert [ch.text[:2] for ch in e.choices] == ["春日", "春日"] and len(e.choices[1].text) == 7, \
        f"echo=True and n=2: two choices, each the prompt then 5 characters: {e}"


def test_streams_parse_with_the_sdk_types_and_match_the_plain_answer(poems):
    url, client = poems
    plain = client.completions.create(model="poetry", prompt="月", max_tokens=30, seed=4).choices[0].text
    chunks = list(client.completions.create(model="poetry", prompt="月", max_tokens=30, seed=4, stream=True))
    assert all(isinstance(c, Completion) for c in chunks), f"chunks should be openai Completion objects: {chunks[:2]}"
    assert "".join(c.choices[0].text for c in chunks) == plain, "the streamed text should be the plain answer's"
    assert chunks[-1].choices[0].finish_reason == "length", f"the last chunk should finish: {chunks[-1]}"
    body = {"model": "poetry", "messages": [{"role": "user", "content": "月"}], "max_tokens": 30, "seed": 4,
            "stream": True, "stream_options": {"include_usage": True}}
    lines = sse_lines(url, "/chat/completions", body)
    assert lines[-1] == "[DONE]", f"the stream should end with data: [DONE], got {lines[-1]!r}"
    parsed = [ChatCompletionChunk.model_validate_json(line) for line in lines[:-1]]  # strict: every field checked
    assert parsed[0].choices[0].delta.role == "assistant", f"the first chunk names the role: {lines[0]}"
    content = [p.choices[0].delta.content or "" for p in parsed if p.choices]
    assert all(len(piece) <= 1 for piece in content), f"one character per chunk, never a split one: {content}"
    assert "".join(content) == plain, "chat streams the same characters as a completion of the same prompt"
    assert parsed[-1].usage.completion_tokens == 30 and not parsed[-1].choices, f"usage last: {lines[-2]}"
    sdk = list(client.chat.completions.create(**{k: v for k, v in body.items() if k != "stream"}, stream=True))
    assert all(isinstance(c, ChatCompletionChunk) for c in sdk), "the SDK should parse chat chunks as its type"


def test_same_seed_same_text(poems):
    url, client = poems

    def text(seed):
        return client.completions.create(model="poetry", prompt="江", max_tokens=40, seed=seed).choices[0].text
    assert text(5) == text(5), "the same seed should give the same text"
    assert text(5) != text(6), "another seed should give another text"


def test_stop_strings_end_the_text_and_are_left_out(poems):
    url, client = poems
    full = client.completions.create(model="poetry", prompt="春日\n", max_tokens=60, seed=2).choices[0].text
    assert "，" in full, f"the test needs a ， in the text: {full!r}"
    for stream in (False, True):
        answer = client.completions.create(model="poetry", prompt="春日\n", max_tokens=60, seed=2, stop=["，", "xyz"],
                                           stream=stream)
        choices = [c.choices[0] for c in answer] if stream else answer.choices
        text, finish = "".join(c.text for c in choices), choices[-1].finish_reason
        assert (text, finish) == (full[:full.index("，")], "stop"), \
            f"stream={stream}: the text up to the stop string, without it: {text!r} vs {full!r}"


def test_an_acrostic_through_extra_body(poems):
    url, client = poems
    chat = client.chat.completions.create(model="poetry", messages=[{"role": "user", "content": "春日"}], seed=3,
                                          extra_body={"acrostic": "春夏秋冬", "rhyme": True})
    poem = "春日" + chat.choices[0].message.content
    title, body = poetry.split_title(poem)
    heads = [line[:1] for line in poetry.poem_lines(body)]
    assert heads == list("春夏秋冬"), f"each line should start with its head character:\n{poem}"
    assert poetry.form_of(body) in ("五绝", "七绝") and chat.choices[0].finish_reason == "stop", \
        f"a whole 绝句, ended by its form:\n{poem}"
    eight = client.completions.create(model="poetry", prompt="", seed=3, extra_body={"acrostic": "一二三四五六七八"})
    lines = poetry.poem_lines(poetry.split_title(eight.choices[0].text)[1])
    assert [line[:1] for line in lines] == list("一二三四五六七八"), f"an 8-line 藏头诗: {eight.choices[0].text}"


def test_eight_concurrent_streams_all_finish_with_their_own_text(poems):
    """8 threads stream at once (batched where they arrive together); each gets what it gets alone."""
    url, client = poems
    got, errors = {}, []

    def stream(seed):
        try:
            chunks = client.completions.create(model="poetry", prompt="山", max_tokens=40, seed=seed, stream=True)
            got[seed] = "".join(c.choices[0].text for c in chunks)
        except Exception as e:  # reported by the assert below
            errors.append(repr(e))
    threads = [threading.Thread(target=stream, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and sorted(got) == list(range(8)), f"all 8 streams should finish: {errors}, {sorted(got)}"
    assert all(len(text) == 40 for text in got.values()), f"each stream should get 40 characters: {got}"
    alone = {seed: client.completions.create(model="poetry", prompt="山", max_tokens=40, seed=seed).choices[0].text
             for seed in (0, 7)}
    assert all(got[s] == alone[s] for s in alone), f"batched text should be the text alone: {got} vs {alone}"


BAD = [  # (path, body as sent, status, param, what the message says)
    ("/completions", b"not json", 400, None, "parse the JSON"),
    ("/completions", b"[1, 2]", 400, None, "JSON object"),
    ("/completions", b'{"model": "poetry", "prompt": "a", "temperature": NaN}', 400, None, "JSON"),
    ("/completions", {"prompt": "春"}, 400, "model", "model"),
    ("/completions", {"model": "gpt-4", "prompt": "春"}, 404, "model", "does not exist"),
    ("/completions", {"model": "poetry"}, 400, "prompt", "prompt"),
    ("/completions", {"model": "poetry", "prompt": [1, 2]}, 400, "prompt", "token ids"),
    ("/completions", {"model": "poetry", "prompt": "春", "max_tokens": -1}, 400, "max_tokens", "minimum"),
    ("/completions", {"model": "poetry", "prompt": "春", "max_tokens": "ten"}, 400, "max_tokens", "integer"),
    ("/completions", {"model": "poetry", "prompt": "春", "max_tokens": 1.5}, 400, "max_tokens", "integer"),
    ("/completions", {"model": "poetry", "prompt": "春", "max_tokens": 5000}, 400, "max_tokens", "--max_tokens"),
    ("/completions", {"model": "poetry", "prompt": "春", "temperature": 3}, 400, "temperature", "maximum"),
    ("/completions", {"model": "poetry", "prompt": "春", "top_p": 0}, 400, "top_p", "minimum"),
    ("/completions", {"model": "poetry", "prompt": "春", "n": 0}, 400, "n", "minimum"),
    ("/completions", {"model": "poetry", "prompt": "春", "n": 99}, 400, "n", "--max_batch"),
    ("/completions", {"model": "poetry", "prompt": "春", "seed": "x"}, 400, "seed", "integer"),
    ("/completions", {"model": "poetry", "prompt": "春", "stream": "yes"}, 400, "stream", "boolean"),
    ("/completions", {"model": "poetry", "prompt": "春", "stop": ["a"] * 5}, 400, "stop", "up to 4"),
    ("/completions", {"model": "poetry", "prompt": "春", "top_k": -1}, 400, "top_k", "minimum"),
    ("/completions", {"model": "poetry", "prompt": "春", "repetition_penalty": 0}, 400, "repetition_penalty",
     "minimum"),
    ("/completions", {"model": "poetry", "prompt": "春", "frobnicate": 1}, 400, "frobnicate", "Unrecognized"),
    ("/completions", {"model": "poetry", "prompt": "春", "logprobs": 2}, 400, "logprobs", "not supported"),
    ("/completions", {"model": "poetry", "prompt": "abc"}, 400, "prompt", "vocabulary"),
    ("/completions", {"model": "poetry", "prompt": "春", "acrostic": "春夏"}, 400, "acrostic", "give 4"),
    ("/completions", {"model": "poetry", "prompt": "春", "form": "haiku"}, 400, "form", "unknown form"),
    ("/completions", {"model": "poetry", "prompt": "春\n春风，", "form": "七绝"}, 400, "prompt", "title"),
    ("/completions", {"model": "poetry", "prompt": "春" * 5000}, 400, "prompt", "--max_prompt"),
    ("/chat/completions", {"model": "poetry", "messages": []}, 400, "messages", "non-empty"),
    ("/chat/completions", {"model": "poetry", "messages": "hi"}, 400, "messages", "non-empty"),
    ("/chat/completions", {"model": "poetry", "messages": [{"role": "robot", "content": "春"}]}, 400,
     "messages[0].role", "role"),
    ("/chat/completions", {"model": "poetry", "messages": [{"role": "user", "content": 5}]}, 400,
     "messages[0].content", "string"),
    ("/chat/completions", {"model": "poetry", "prompt": "春"}, 400, "prompt", "Unrecognized"),
]


def assert_openai_error(r, status, what):
    """An HTTP error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}, no traceback."""
    assert r.status_code == status, f"{what}: expected HTTP {status}, got {r.status_code}: {r.text}"
    assert "Traceback" not in r.text, f"{what}: a traceback reached the client: {r.text}"
    error = r.json().get("error")
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, \
        f"{what}: not OpenAI's error shape: {r.text}"
    assert isinstance(error["message"], str) and error["message"], f"{what}: the error needs a message: {r.text}"
    return error


@pytest.mark.parametrize("path, body, status, param, words", BAD, ids=[f"{i}" for i in range(len(BAD))])
def test_a_bad_request_gets_an_openai_error(poems, path, body, status, param, words):
    url, client = poems
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(f"{url}{path}", headers={"Content-Type": "application/json"}, timeout=30, **kw)
    error = assert_openai_error(r, status, f"{path} {body!r:.80}")
    assert error["param"] == param, f"param should be {param!r}: {r.text}"
    assert words in error["message"], f"the message should say {words!r}: {r.text}"


def test_wrong_routes_and_methods_and_the_sdk_s_own_errors(poems):
    url, client = poems
    assert_openai_error(httpx.get(f"{url}/nowhere", timeout=30), 404, "unknown URL")
    assert_openai_error(httpx.get(f"{url}/completions", timeout=30), 405, "GET on a POST route")
    assert_openai_error(httpx.get(f"{url}/models/gpt-4", timeout=30), 404, "unknown model")
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="poetry", prompt="春", max_tokens=-1)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "春"}])
    assert client.models.list().data[0].id == "poetry", "the server should still answer after bad requests"


# -----------------------------------------------------------------------------
# the tiny model: caps, a client that hangs up, the key

def test_a_client_that_hangs_up_frees_its_place(tiny):
    url, client = tiny
    long = dict(model="tiny", prompt="宝玉", max_tokens=1000000, stream=True)
    first, second = client.completions.create(**long, seed=1), client.completions.create(**long, seed=2)
    next(iter(first)), next(iter(second))  # both streaming: the server's 2 places are taken
    with pytest.raises(openai.RateLimitError) as refused:
        client.completions.create(model="tiny", prompt="宝玉", max_tokens=1)
    r = refused.value.response
    assert_openai_error(r, 429, "a third request while 2 places are taken")
    assert r.json()["error"]["code"] == "rate_limit_exceeded", f"OpenAI's 429 code: {r.text}"
    first.close()  # hang up mid-stream
    deadline = time.time() + 20
    while True:
        try:
            answer = client.completions.create(model="tiny", prompt="宝玉", max_tokens=3)
            break
        except openai.RateLimitError:
            assert time.time() < deadline, "the place of a client that hung up should be freed"
            time.sleep(0.2)
    assert len(answer.choices[0].text) == 3, f"the freed place should serve a request: {answer}"
    second.close()
    while True:  # both places free again: a request of 2 rows fits
        try:
            client.completions.create(model="tiny", prompt="宝玉", max_tokens=1, n=2)
            break
        except openai.RateLimitError:
            assert time.time() < deadline, "the second stream's place should be freed when it hangs up too"
            time.sleep(0.2)


def test_the_api_key_is_checked_on_every_route(tiny):
    url, client = tiny
    for method, path in [("GET", "/models"), ("POST", "/completions"), ("POST", "/chat/completions"),
                         ("GET", "/nowhere")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            r = httpx.request(method, f"{url}{path}", headers=headers, json={"model": "tiny", "prompt": "宝"},
                              timeout=30)
            error = assert_openai_error(r, 401, f"{method} {path} with {headers}")
            assert error["code"] == "invalid_api_key", f"OpenAI's 401 code: {r.text}"
    wrong = openai.OpenAI(base_url=url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "宝玉"}])
    assert len(chat.choices[0].message.content) == 8, f"the key opens it; --chat_max_tokens=8 by default: {chat}"


def test_caps_of_a_small_server(tiny):
    url, client = tiny
    with pytest.raises(openai.BadRequestError, match="--max_prompt"):
        client.completions.create(model="tiny", prompt="宝" * 51)
    with pytest.raises(openai.BadRequestError, match="--max_batch"):
        client.completions.create(model="tiny", prompt="宝", n=3)
    with pytest.raises(openai.BadRequestError, match="--max_batch"):
        client.completions.create(model="tiny", prompt=["宝", "玉", "黛"])
    two = client.completions.create(model="tiny", prompt=["宝玉", "黛玉笑道"], max_tokens=4, seed=9)
    assert [len(c.text) for c in two.choices] == [4, 4] and two.usage.prompt_tokens == 6, \
        f"two prompts of two lengths, one choice each: {two}"


# -----------------------------------------------------------------------------
# the command line

def test_another_host_needs_an_api_key():
    proc = run("serve.py", f"--out_dir={POETRY}", "--host=0.0.0.0")
    assert_user_error(proc, "--api_key", "ssh -L 8000:127.0.0.1:8000")


def test_a_port_in_use_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        proc = run("serve.py", f"--out_dir={POETRY}", f"--port={s.getsockname()[1]}")
    assert_user_error(proc, "choose another --port")


def test_sse_events_are_json_per_line(poems):
    """Every event but [DONE] is one JSON object of the right object type (the raw stream, no SDK)."""
    url, client = poems
    lines = sse_lines(url, "/completions", {"model": "poetry", "prompt": "风", "max_tokens": 5, "stream": True,
                                            "n": 2})
    objects = [json.loads(line) for line in lines[:-1]]
    assert {o["object"] for o in objects} == {"text_completion"}, f"object should be text_completion: {objects}"
    assert sorted({o["choices"][0]["index"] for o in objects}) == [0, 1], f"both choices should stream: {objects}"
    assert len({o["id"] for o in objects}) == 1, "every chunk of one answer has its id"


@pytest.mark.slow
def test_the_serve_benchmark_counts_what_the_clients_got(tiny_run):
    proc = run("bench.py", "--what=serve", f"--run={tiny_run}", "--max_new_tokens=5", "--json")
    assert proc.returncode == 0, f"bench.py --what=serve failed:\n{proc.stderr[-2000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    clients = {int(n): r for n, r in result["clients"].items()}
    assert sorted(clients) == [1, 4, 8, 16], f"1, 4, 8 and 16 clients: {result}"
    assert all(r["characters"] == 5 * n and r["seconds"] > 0 for n, r in clients.items()), \
        f"every client should get its 5 characters: {result}"
