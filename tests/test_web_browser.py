"""
The web page in a real browser: headless Chromium (Debian's chromium + chromedriver, driven by Selenium)
clicks through what a person does: switch the language, upload and prepare a text, train a tiny run and
see its loss plot, watch samples stream in, write a 藏头诗 and a 对联, start a long run and stop it.
Screenshots of each step are saved in the test's temporary folder (the path is printed). `make test` installs the browser as root.
Run: OMP_NUM_THREADS=1 python -m pytest tests/test_web_browser.py -s
"""

import os
import shutil
import time

import pytest
from conftest import TEXT, web_page

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from babygpt import checkpoint  # noqa: E402
from babygpt import poetry  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.slow,  # make test-fast leaves this file out
              pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                 reason="no chromium + chromedriver (as root: apt-get install chromium chromium-driver)")]

# TINY's settings (tests/conftest.py), typed into the Train tab's boxes
TINY_BOXES = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "batch_size": 4, "eval_iters": 2,
              "log_interval": 1, "device": "cpu", "dtype": "float32", "compile": False,
              "max_iters": 40, "lr_decay_iters": 40, "eval_interval": 10, "warmup_iters": 5}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """(driver, root, shots folder): a fresh headless Chromium on a page over a temporary root."""
    base = tmp_path_factory.mktemp("browser")
    root, shots = base / "root", base / "screenshots"
    root.mkdir()
    shots.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1500",
                 f"--user-data-dir={base / 'profile'}"):
        options.add_argument(flag)
    with web_page(str(root)) as url:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
        try:
            driver.get(url)
            yield driver, str(root), shots
        finally:
            driver.quit()
            print(f"\nscreenshots: {shots}")


RECORD_LENGTHS = """
const box = document.querySelector('#sm_out textarea');
window.lengths = [];
window.recorder = setInterval(() => {
    const n = box.value.length;
    if (window.lengths[window.lengths.length - 1] !== n) window.lengths.push(n);
}, 10);
"""


def wait_for(driver, what, check, timeout=120):
    """check(driver) until it is truthy; its value is returned."""
    deadline = time.time() + timeout
    while True:
        value = check(driver)
        if value:
            return value
        if time.time() > deadline:
            driver.save_screenshot(os.path.join(os.environ.get("TMPDIR", "/tmp"), "web-browser-timeout.png"))
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def text_of(driver, elem_id):
    """The element's visible text; "" while it is not on the page (yet)."""
    found = driver.find_elements(By.ID, elem_id)
    return found[0].text if found else ""


def value_of(driver, elem_id):
    """What a box holds (a dropdown's choice, a textbox's text); "" while it is not on the page."""
    found = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} input, #{elem_id} textarea")
    return found[0].get_attribute("value") if found else ""


def type_into(driver, elem_id, value):
    """Replace a box's text the way a person does: select all, type, leave the box. Waits for the box to
    be shown: an accordion draws its boxes a moment after the click that opens it."""
    selector = f"#{elem_id} textarea, #{elem_id} input[type=number], #{elem_id} input[type=text]"
    box = wait_for(driver, f"the box {elem_id}", lambda d: next(
        (b for b in d.find_elements(By.CSS_SELECTOR, selector) if b.is_displayed() and b.is_enabled()), None),
        timeout=30)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value))
    box.send_keys(Keys.TAB)


def set_keys(driver, values):
    """Open the box of every train.py key, type the values, close it (so screenshots show the run)."""
    keys = driver.find_element(By.CSS_SELECTOR, "#tr_keys button, #tr_keys .label-wrap")
    keys.click()
    for key, value in values.items():
        type_into(driver, f"key_{key}", value)
    keys.click()


def open_tab(driver, label):
    driver.find_element(By.XPATH, f"//button[@role='tab' and normalize-space(.)='{label}']").click()


def test_opens_in_chinese_and_switches_to_english(browser):
    driver, _, shots = browser
    wait_for(driver, "the page", lambda d: "准备数据" in text_of(d, "title"))
    driver.save_screenshot(str(shots / "0-chinese.png"))
    driver.find_element(By.XPATH, "//*[@id='lang']//label[contains(., 'English')]").click()
    wait_for(driver, "English texts", lambda d: "prepare, train, sample" in text_of(d, "title"))
    # the tabs are drawn a moment after the title (seen in CI): wait for them too, within the same timeout
    wait_for(driver, "the tabs in English",
             lambda d: d.find_elements(By.XPATH, "//button[@role='tab' and normalize-space(.)='Train']"))


def test_upload_and_prepare(browser, tmp_path):
    driver, root, shots = browser
    src = tmp_path / "红楼梦片段.txt"
    src.write_text(TEXT * 40, encoding="utf-8")
    driver.find_element(By.CSS_SELECTOR, "#ds_files input[type=file]").send_keys(str(src))
    wait_for(driver, "the upload", lambda d: "红楼梦片段" in text_of(d, "ds_files"))
    type_into(driver, "ds_name", "mytext")
    type_into(driver, "ds_block", 16)
    driver.find_element(By.ID, "ds_go").click()
    status = wait_for(driver, "prepare's result", lambda d: text_of(d, "ds_status"))
    driver.save_screenshot(str(shots / "1-prepared.png"))
    assert status.startswith("prepared mytext"), f"the page should say the dataset is prepared: {status}"
    report = value_of(driver, "ds_report")
    assert "vocab size: 50" in report, f"the page should show prepare's report:\n{report}"
    assert os.path.isfile(os.path.join(root, "data", "mytext", "train.bin")), "train.bin should be written"


def test_tiny_training_shows_the_loss_plot(browser):
    driver, root, shots = browser
    open_tab(driver, "Train")
    wait_for(driver, "the dataset picked", lambda d: value_of(d, "tr_dataset") == "mytext")
    type_into(driver, "tr_out", "out-web")
    set_keys(driver, TINY_BOXES)
    driver.find_element(By.ID, "tr_start").click()
    command = wait_for(driver, "the command line", lambda d: value_of(d, "tr_cmd"))
    assert command.startswith("python train.py config/") and "--n_embd=32" in command, command
    wait_for(driver, "the run to finish", lambda d: "finished" in text_of(d, "tr_status"))
    plot = wait_for(driver, "the loss plot",
                    lambda d: d.find_elements(By.CSS_SELECTOR, "#tr_plot canvas, #tr_plot svg"))
    time.sleep(1)  # the plot's own redraw
    driver.save_screenshot(str(shots / "2-trained.png"))
    assert plot[0].size["height"] > 100, f"the loss plot should be drawn, its size is {plot[0].size}"
    log = value_of(driver, "tr_log")
    assert "step 40: train loss" in log, f"the log tail should show the last eval:\n{log}"


def test_samples_stream_into_the_page(browser):
    driver, _, shots = browser
    open_tab(driver, "Sample")
    wait_for(driver, "the run picked", lambda d: value_of(d, "sm_run") == "out-web")
    type_into(driver, "sm_n", 1)
    type_into(driver, "sm_len", 2000)
    full = len("宝玉") + 2000 + len("\n---------------\n")  # the default prompt, the characters, the separator
    driver.execute_script(RECORD_LENGTHS)  # the page itself notes each length the text box shows
    driver.find_element(By.ID, "sm_go").click()
    wait_for(driver, "the first characters", lambda d: value_of(d, "sm_out"))
    driver.save_screenshot(str(shots / "3-streaming.png"))
    wait_for(driver, "the whole sample", lambda d: len(value_of(d, "sm_out")) >= full)
    driver.save_screenshot(str(shots / "4-sampled.png"))
    seen = [n for n in driver.execute_script("clearInterval(window.recorder); return window.lengths;") if n]
    assert len(seen) >= 3 and seen == sorted(seen), f"the text should appear bit by bit, lengths shown: {seen}"
    assert seen[-1] == full, f"the sample should be the prompt, 2,000 characters and the separator: {seen[-1]}"
    notes = wait_for(driver, "the copy report",
                     lambda d: "copy report" in text_of(d, "sm_notes") and text_of(d, "sm_notes"))
    assert notes.startswith("copy report, sample 1: longest copied passage"), f"sample.py's report, shown: {notes}"


def generate(driver, what, done):
    """Click Generate; the first sample once done(its text) says it is whole. Every update of the text, partial
    ones too, ends with the separator, so the separator alone does not say generation is over."""
    driver.find_element(By.ID, "sm_go").click()
    first = lambda d: value_of(d, "sm_out").split("\n---------------")[0]  # noqa: E731
    return wait_for(driver, what, lambda d: done(first(d)) and first(d))


def test_a_tang_acrostic_is_written_on_the_page(browser):
    """The poem controls, as a person uses them: open them, type the 藏头 characters, generate, read the poem."""
    driver, _, shots = browser
    open_tab(driver, "Sample")
    wait_for(driver, "the run picked", lambda d: value_of(d, "sm_run") == "out-web")
    type_into(driver, "sm_n", 1)
    type_into(driver, "sm_len", 100)
    driver.find_element(By.CSS_SELECTOR, "#sm_poem button, #sm_poem .label-wrap").click()
    type_into(driver, "sm_acrostic", "满一都谁")
    # whole: four lines, each closed; and short, not the 2,000 characters the last test left in the box
    whole = lambda t: sum(c in poetry.LINE_END for c in poetry.split_title(t)[1]) >= 4 and len(t) < 200  # noqa: E731
    poem = generate(driver, "the poem", whole)
    driver.save_screenshot(str(shots / "5-acrostic.png"))
    heads = [line[0] for line in poetry.poem_lines(poetry.split_title(poem)[1])]
    assert heads == list("满一都谁"), f"the page should show a 藏头诗 whose lines start with 满一都谁:\n{poem}"
    assert "--acrostic=满一都谁" in value_of(driver, "sm_cmd"), "the command line should carry --acrostic"


def test_stop_a_long_run(browser):
    driver, root, shots = browser
    open_tab(driver, "Train")
    type_into(driver, "tr_out", "out-web-stop")
    set_keys(driver, {"max_iters": 100000, "lr_decay_iters": 100000})
    driver.find_element(By.ID, "tr_start").click()
    wait_for(driver, "the run to be going", lambda d: "running" in text_of(d, "tr_status")
             and "iteration" in text_of(d, "tr_status"))
    driver.save_screenshot(str(shots / "5-running.png"))
    driver.find_element(By.ID, "tr_stop").click()
    status = wait_for(driver, "the run to stop",
                      lambda d: "stopped" in text_of(d, "tr_status") and text_of(d, "tr_status"))
    driver.save_screenshot(str(shots / "6-stopped.png"))
    assert status.startswith("stopped"), f"the page should say the run stopped: {status}"


def pick_from(driver, elem_id, choice):
    """Open a dropdown and click one of its choices, as a person does (once it is on the page: a box inside an
    accordion just opened is drawn a moment later)."""
    wait_for(driver, f"the dropdown {elem_id}", lambda d: next(
        (e for e in d.find_elements(By.CSS_SELECTOR, f"#{elem_id} input") if e.is_displayed()), None),
        timeout=30).click()
    option = wait_for(driver, f"{choice} in the list {elem_id}", lambda d: next(
        (o for o in d.find_elements(By.CSS_SELECTOR, "[role=option]") if o.get_attribute("aria-label") == choice),
        None), timeout=30)
    option.click()
    wait_for(driver, f"{choice} picked in {elem_id}", lambda d: value_of(d, elem_id) == choice, timeout=30)


def fresh_page_in_english(driver):
    """Load the page again (every box as it opens) and switch it to English."""
    driver.get(driver.current_url)
    wait_for(driver, "the page", lambda d: "准备数据" in text_of(d, "title"))
    driver.find_element(By.XPATH, "//*[@id='lang']//label[contains(., 'English')]").click()
    wait_for(driver, "the tabs in English",
             lambda d: d.find_elements(By.XPATH, "//button[@role='tab' and normalize-space(.)='Train']"))


def test_fine_tune_the_shipped_model_on_an_upload(browser, tmp_path):
    """Data: an upload that extends pretrained/hlm's vocabulary (picked in the --vocab_from list); Train: the
    fine-tune preset on it, two steps; the run's model has the grown vocabulary."""
    driver, root, shots = browser
    fresh_page_in_english(driver)  # the upload box of the first test is emptied
    src = tmp_path / "mine.txt"
    src.write_text((TEXT + "咖啡馆里，她打开电脑。\n") * 30, encoding="utf-8")
    driver.find_element(By.CSS_SELECTOR, "#ds_files input[type=file]").send_keys(str(src))
    wait_for(driver, "the upload", lambda d: "mine" in text_of(d, "ds_files"))
    type_into(driver, "ds_name", "mine")
    type_into(driver, "ds_block", 16)
    pick_from(driver, "ds_vocab", "pretrained/hlm")
    driver.find_element(By.ID, "ds_go").click()
    status = wait_for(driver, "prepare's result", lambda d: text_of(d, "ds_status"))
    driver.save_screenshot(str(shots / "7-prepared-extending-hlm.png"))
    assert status.startswith("prepared mine"), f"the page should say the dataset is prepared: {status}"
    assert "--vocab_from=pretrained/hlm" in value_of(driver, "ds_cmd"), value_of(driver, "ds_cmd")
    assert "new ones appended" in value_of(driver, "ds_report"), value_of(driver, "ds_report")

    open_tab(driver, "Train")
    driver.find_element(By.XPATH, "//*[@id='tr_preset']//label[contains(., 'fine-tune')]").click()
    wait_for(driver, "the fine-tune config", lambda d: value_of(d, "tr_config") == "finetune_chinese.py")
    wait_for(driver, "the dataset picked", lambda d: value_of(d, "tr_dataset") == "mine")
    type_into(driver, "tr_out", "out-web-ft")
    set_keys(driver, {"passes": 0.1, "eval_interval": 2, "eval_iters": 1, "batch_size": 2, "block_size": 16})
    driver.find_element(By.ID, "tr_start").click()
    wait_for(driver, "the fine-tune to finish", lambda d: "finished" in text_of(d, "tr_status"))
    driver.save_screenshot(str(shots / "8-fine-tuned.png"))
    assert value_of(driver, "tr_cmd").startswith("python train.py config/finetune_chinese.py"), \
        value_of(driver, "tr_cmd")
    meta = checkpoint.load_meta(os.path.join(root, "data", "mine", "meta.pkl"))
    saved = checkpoint.load_checkpoint(os.path.join(root, "out-web-ft"))
    assert saved["config"]["init_from"] == "pretrained/hlm", saved["config"]["init_from"]
    assert saved["model_args"]["vocab_size"] == meta["vocab_size"], "the fine-tune's model should have the grown vocabulary"


def test_a_couplet_is_written_on_the_page(browser):
    """对联 as a form: the shipped poetry model, a 上联 typed as the prompt (ending on 仄: 媚), 平仄 and the 平水韵
    as the page opens them; the 下联 is on the next row, as long as the 上联 and with its comma in the same place."""
    driver, _, shots = browser
    fresh_page_in_english(driver)
    open_tab(driver, "Sample")
    pick_from(driver, "sm_run", "pretrained/poetry")
    upper = "鸟语花香，春光明媚"
    type_into(driver, "sm_prompt", upper)
    type_into(driver, "sm_n", 1)
    driver.find_element(By.CSS_SELECTOR, "#sm_poem button, #sm_poem .label-wrap").click()
    pick_from(driver, "sm_form", "对联")
    assert driver.find_element(By.CSS_SELECTOR, "#sm_tone input").is_selected(), "平仄 should be on as the page opens"
    assert driver.find_element(By.CSS_SELECTOR, "#sm_rhyme input").is_selected(), "rhyme should be on (sample.py's)"
    book = driver.find_element(By.CSS_SELECTOR, "#sm_book input:checked").get_attribute("value")
    assert book == "pingshui", f"the 平水韵 should be the rhyme book the page opens with, not {book}"
    out = generate(driver, "the 下联", lambda t: "\n" in t and len(t.split("\n")[1]) >= len(upper))
    driver.save_screenshot(str(shots / "9-couplet.png"))
    rows = out.split("\n")
    assert len(rows) == 2 and rows[0] == upper, f"the 上联 on its row, the 下联 on the next:\n{out}"
    lower = rows[1]
    assert len(lower) == len(upper) and lower.index("，") == upper.index("，") and lower != upper, \
        f"the 下联 should be as long as the 上联, its comma in the same place: {lower!r}"
    assert all(poetry.is_han(c) for c in lower.replace("，", "")), f"the 下联 should be Chinese characters: {lower!r}"
    assert "--form=对联" in value_of(driver, "sm_cmd"), "the command line should carry --form=对联"
