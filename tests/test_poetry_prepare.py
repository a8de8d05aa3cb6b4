"""
data/poetry/prepare.py on a tiny fake chinese-poetry tree (no download): the tarball and the folder give the
same dataset, traditional characters become simplified, each cleaning step is counted, the split is by poem,
meta.pkl carries the 词牌 patterns and the title cap, the other collections (诗经, 四书, 蒙学, ...) are read by
their --include names, a near-duplicate is kept once, a held-out poet is in neither split, and bad inputs are one
line with the earlier outputs untouched.
Run: python -m pytest tests/test_poetry_prepare.py
"""

import base64
import hashlib
import json
import os
import pickle
import tarfile

import numpy as np
import pytest

from babygpt import poetry
from babygpt.checkpoint import load_meta
from babygpt.errors import UserError
from conftest import assert_user_error, run
from data.poetry import prepare as poetry_prepare

SCRIPT = "data/poetry/prepare.py"
OUTPUTS = ("meta.pkl", "train.bin", "val.bin")
CHARS = "山水风月花鸟云天江河春秋日夜人家草木雪雨歌酒书琴星海松竹石田城楼舟桥灯金玉光影心门"  # 41: prime


def poem(title, *rows, key="title"):
    return {key: title, "author": "某", "paragraphs": list(rows)}


def regular(i):
    """The i-th of 40 distinct 五绝s (filler, so the val split has enough text)."""
    line = lambda k: "".join(CHARS[(i * 7 + k * 3 + j) % len(CHARS)] for j in range(5))
    return poem(f"無題{CHARS[i % len(CHARS)]}{i}", f"{line(0)}，{line(1)}。", f"{line(2)}，{line(3)}。")


# what each cleaning step must find in the tree below
TANG_0 = [
    poem("靜夜思", "牀前明月光，疑是地上霜。", "舉頭望明月，低頭思故鄉。"),
    poem("登鸛雀樓（一作朱斌詩）", "白日依山盡，黃河入海流。（一作「白日」）", "欲窮千里目，更上一層樓。"),  # 2 notes
    poem("【存目】", "【注：此詩見《全唐詩》】"),       # a note and nothing else: empty, title note counted
    poem("春曉", "春眠不覺□，處處聞啼鳥。", "夜來風雨聲，花落知多少。"),  # placeholder
    poem("靜夜思二", "牀前明月光，疑是地上霜。", "舉頭望明月，低頭思故鄉。"),  # duplicate of the first
    poem("空", ),                                                             # empty
    poem("私", "月\ue000天涯，相思未可期。"),                                   # private use
    poem("雜", "《白雪》詠歌人似玉，青雲頭角馬生風。"),                        # junk: 《》
    poem("殘", "白雲千載空悠悠"),                                              # broken: a line left open
    poem("江南 二", "江南可采蓮，蓮葉何田田。"),                                 # title space dropped
]
REMOVED = {"notes": 4, "empty": 2, "placeholder": 1, "private_use": 1, "junk": 1, "broken": 1, "duplicates": 1,
           "held_out": 0, "held_out_copies": 0, "untitled": 0}
CI = [poem("如夢令", "常記溪亭日暮。沉醉不知歸路。", "興盡晚回舟，誤入藕花深處。", "爭渡。爭渡。驚起一灘鷗鷺。",
           key="rhythmic"),
      poem("如夢令", "昨夜雨疏風驟。濃睡不消殘酒。", "試問捲簾人，卻道海棠依舊。", "知否。知否。應是綠肥紅瘦。",
           key="rhythmic"),
      poem("如夢令", "誰伴明窗獨坐，我共影兒兩箇。", "燈盡欲眠時，影也把人拋躲。", "無那。無那。好箇悽惶的我。",
           key="rhythmic"),
      poem("憶秦娥", "簫聲咽。秦娥夢斷秦樓月。", key="rhythmic"),  # one poem: no pattern
      poem("失調名", "春風起。花滿地。", key="rhythmic"),
      poem("失調名", "秋風起。葉滿地。", key="rhythmic")]  # "tune lost": never a pattern
RUMENGLING = "6。6。5，6。2。2。6。"

# 宋诗 (--include=song): a poet to hold out, a copy of one of his poems under another name with a variant
# character, the same poem under two other poets (one character in ten differs: kept once), and a refrain
# that opens two different poems (kept twice)
XIAKE = "趙客縵胡纓，吳鉤霜雪明。銀鞍照白馬，颯沓如流星。十步殺一人，千里不留行。事了拂衣去，深藏身與名。"
SONG_1 = [dict(poem("題西林壁", "橫看成嶺側成峰，遠近高低各不同。", "不識廬山真面目，只緣身在此山中。"), author="蘇軾"),
          dict(poem("飲湖上初晴後雨", "水光瀲灧晴方好，山色空濛雨亦奇。", "欲把西湖比西子，淡妝濃抹總相宜。"), author="蘇軾"),
          dict(poem("西湖", "水光瀲灧晴偏好，山色空濛雨亦奇。", "欲把西湖比西子，淡妝濃抹總相宜。"), author="佚名"),
          dict(poem("俠客行", XIAKE), author="李白"),
          dict(poem("俠客", XIAKE.replace("深藏", "深留")), author="無名氏"),
          dict(poem("沒了期歌一", "沒了期，沒了期，營基才了又倉基。"), author="錢鏐"),
          dict(poem("沒了期歌二", "沒了期，沒了期，春衣才了又冬衣。"), author="錢鏐")]
# the other collections, each in its own file layout; 御定全唐诗 (yudingquantangshi/json/N.json) is never read
OTHERS = {"package/dist/shijing/shijing.json": [{"title": "關雎", "chapter": "國風", "section": "周南",
                                                 "content": ["關關雎鳩，在河之洲。窈窕淑女，君子好逑。"]}],
          "package/dist/lunyu/lunyu.json": [{"chapter": "學而篇", "paragraphs": ["子曰：「學而時習之，不亦說乎？」"]}],
          "package/dist/mengxue/qianziwen.json": {"title": "千字文", "author": "周興嗣",
                                                  "paragraphs": ["天地玄黃", "宇宙洪荒"]},
          "package/dist/mengxue/qianjiashi.json": {"title": "千家詩", "content": [{"type": "五言絕句", "content": [
              {"chapter": "靜夜思", "author": "（唐）李白",
               "paragraphs": ["牀前明月光，疑是地上霜。", "舉頭望明月，低頭思故鄉。"]}]}]},  # a copy of 全唐诗's
          "package/dist/yuanqu/yuanqu.json": [{"title": "天淨沙・秋思", "author": "馬致遠",
                                               "paragraphs": ["枯藤老樹昏鴉，小橋流水人家，古道西風瘦馬。"]}],
          "package/dist/yudingquantangshi/json/001.json": [poem("御定", "此詩不應出現，御定全唐詩也。")]}


def write_tree(root, layout):
    """The JSON files in the npm package's layout ('npm') or the repository's ('repo')."""
    tang, ci = ("package/dist/quantangshi", "package/dist/songci") if layout == "npm" else ("全唐诗", "宋词")
    files = {f"{tang}/poet.tang.0.json": TANG_0,
             f"{tang}/poet.tang.1000.json": [regular(i) for i in range(40)],
             f"{tang}/poet.song.0.json": [poem("宋詩", "春風又綠江南岸，明月何時照我還。")],
             f"{tang}/poet.song.1.json": SONG_1,
             f"{tang}/error/poet.tang.0.json": [poem("錯", "此詩不應出現，此詩不應出現。")],
             "package/dist/strains/json/poet.tang.0.json": [{"id": "x", "strains": ["平平仄仄平。"]}],
             "package/dist/rank/poet/poet.tang.rank.0.json": [{"title": "靜夜思", "baidu": 1}],
             f"{ci}/ci.song.0.json": CI, **OTHERS}
    for name, records in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(records, f, ensure_ascii=False)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("poetry")
    npm = write_tree(str(base / "npm"), "npm")
    tgz = str(base / "chinese-poetry-test.tgz")
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(os.path.join(npm, "package"), arcname="package")
    return {"npm": npm, "repo": write_tree(str(base / "repo"), "repo"), "tgz": tgz}


def prepare(tmp_path, source, *args, name="out"):
    out = tmp_path / name
    proc = run(SCRIPT, f"--input={source}", f"--out_dir={out}", "--block_size=8", "--val_fraction=0.2", *args)
    assert proc.returncode == 0, f"prepare failed:\n{proc.stderr}"
    return out, proc.stdout


def records(out):
    """(meta, train records, val records): each record a poem's text, title row first."""
    meta = load_meta(str(out / "meta.pkl"))
    texts = ["".join(meta["itos"][i] for i in np.fromfile(out / f"{s}.bin", dtype=meta["dtype"]).tolist())
             for s in ("train", "val")]
    for t in texts:
        assert t.endswith("。\n\n") and "\n\n\n" not in t, \
            f"records should be whole, a blank row after each: {t[-40:]!r}"
    return meta, *[t[:-2].split("\n\n") for t in texts]


def test_tarball_and_folder_give_the_same_dataset(tmp_path, tree):
    a, _ = prepare(tmp_path, tree["tgz"], name="from_tgz")
    b, _ = prepare(tmp_path, tree["repo"], name="from_repo")
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs between the tarball and the folder"
    meta, train, val = records(a)
    titles = [r.split("\n")[0] for r in train + val]
    assert "错" not in titles and "平平仄仄平" not in "".join(train + val), "error/ and strains/ files must be skipped"
    assert "宋诗" not in titles, "宋诗 is read only with --include=song"


def test_simplified_by_default_traditional_on_request(tmp_path, tree):
    meta, train, val = records(prepare(tmp_path, tree["repo"])[0])
    poems = {r.split("\n")[0]: r for r in train + val}
    assert poems.get("静夜思") == "静夜思\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。", \
        f"t2s, one couplet per row: {poems.get('静夜思')!r}"
    assert "靜" not in meta["stoi"] and "鄉" not in meta["stoi"], "traditional characters left after t2s"
    meta, train, val = records(prepare(tmp_path, tree["repo"], "--script=traditional", name="trad")[0])
    assert "靜夜思\n牀前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。" in train + val, \
        "--script=traditional should keep the original characters"


def test_cleaning_is_counted(tmp_path, tree):
    numbers = poetry_prepare.prepare_poetry(tree["npm"], str(tmp_path / "out"), ["tang", "ci"],
                                            val_fraction=0.2, block_size=8, log=lambda line: None)
    assert numbers["removed"] == REMOVED, f"cleaning counts: got {numbers['removed']}, expected {REMOVED}"
    assert numbers["poems_read"] == {"tang": 50, "ci": 6}, f"poems read: {numbers['poems_read']}"
    assert numbers["poems"] == {"tang": 43, "ci": 6}, f"poems kept: {numbers['poems']}"
    assert numbers["forms"]["五绝"] == 42 and numbers["forms"]["other"] == 7, f"forms: {numbers['forms']}"
    meta, train, val = records(tmp_path / "out")
    text = "\n".join(train + val)
    assert "一作" not in text and "注" not in text and "存目" not in text, "notes in brackets should be gone"
    assert "登鹳雀楼\n白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。" in train + val, "a note removed, the poem kept"
    assert "江南二\n江南可采莲，莲叶何田田。" in train + val, "a title keeps its Chinese characters only"
    assert numbers["chars"] == sum(len(r) + 2 for r in train + val), "chars should count every token written"


def test_split_is_by_poem(tmp_path, tree):
    out, stdout = prepare(tmp_path, tree["npm"], "--include=tang,ci")
    meta, train, val = records(out)
    assert train and val, f"both splits should hold poems: {len(train)} train, {len(val)} val"
    assert not set(train) & set(val), "a poem is in both train and val"
    for r in train + val:
        title, body = poetry.split_title(r)
        assert title and body and body == poetry.layout(body.replace("\n", "")), f"not a whole poem: {r!r}"
    assert len(train) + len(val) == 49 and meta["val_tokens"] == sum(len(r) + 2 for r in val), \
        "every kept poem is in exactly one split, and val.bin holds exactly the val poems"
    tang_only = records(prepare(tmp_path, tree["npm"], name="tang")[0])
    assert set(tang_only[2]) == {r for r in val if "如梦令" not in r and "忆秦娥" not in r and "失调名" not in r}, \
        "a poem's side should not depend on which collections are included"


def test_the_other_collections_by_their_names(tmp_path, tree):
    out, stdout = prepare(tmp_path, tree["npm"], "--include=tang,shijing,sishu,mengxue,yuanqu")
    meta, train, val = records(out)
    poems = train + val
    expected = ["关雎\n关关雎鸠，在河之洲。\n窈窕淑女，君子好逑。",  # 诗经: lines under "content"
                "学而篇\n子曰，学而时习之，不亦说乎？",  # 四书: a chapter; quotes go, a colon is a comma
                "千字文\n天地玄黄。\n宇宙洪荒。",  # 蒙学: a line with no mark ends on 。
                "天净沙·秋思\n枯藤老树昏鸦，小桥流水人家，古道西风瘦马。"]  # 元曲
    for text in expected:
        assert text in poems, f"{text.splitlines()[0]} should be read and cleaned: {[p[:12] for p in poems]}"
    assert sum(p.startswith("静夜思\n") for p in poems) == 1, "千家诗's 静夜思 is a copy of 全唐诗's: kept once"
    assert not any("御定" in p for p in poems), "御定全唐诗 is a second edition of 全唐诗: never read"
    assert "元曲 (yuanqu): 1 poems read, 1 kept" in stdout, f"each collection is reported:\n{stdout}"
    assert meta["title_max"] == poetry_prepare.title_max(p.split("\n")[0] for p in poems), \
        f"meta.pkl's title_max should be the corpus' 90th percentile of title lengths: {meta['title_max']}"


def test_near_duplicates_are_kept_once(tmp_path, tree):
    numbers = poetry_prepare.prepare_poetry(tree["npm"], str(tmp_path / "out"), ["tang", "song"],
                                            val_fraction=0.2, block_size=8, log=lambda line: None)
    meta, train, val = records(tmp_path / "out")
    titles = [r.split("\n")[0] for r in train + val]
    assert titles.count("侠客行") == 1 and "侠客" not in titles, \
        f"the same poem under two poets, one character in ten differing, is kept once (the first): {titles}"
    assert "没了期歌一" in titles and "没了期歌二" in titles, f"two poems that share a refrain are both kept: {titles}"
    assert "西湖" not in titles and "饮湖上初晴后雨" in titles, f"a variant character is a near-duplicate: {titles}"
    assert numbers["removed"]["duplicates"] == 1 + 2, f"全唐诗's one duplicate and 宋诗's two: {numbers['removed']}"


def test_hold_out_leaves_a_poet_out_of_both_splits(tmp_path, tree):
    out, stdout = prepare(tmp_path, tree["npm"], "--include=tang,song")
    assert "题西林壁" in "\n".join(sum(records(out)[1:], [])), "without --hold_out 苏轼's poems are in the dataset"
    out, stdout = prepare(tmp_path, tree["npm"], "--include=tang,song", "--hold_out=苏轼,李白", name="held")
    meta, train, val = records(out)
    text = "\n".join(train + val)
    for line in ("横看成岭侧成峰", "水光潋滟晴", "赵客缦胡缨"):
        assert line not in text, f"a held-out poet's poem (or a copy under another name) is in a split: {line}"
    assert "没了期歌一" in text, "the other poets' poems stay"
    assert "3 poems of the held-out poets" in stdout and "2 near-duplicates of those" in stdout, \
        f"the report says how many poems were held out:\n{stdout}"
    assert meta["held_out"] == ["苏轼", "李白"], f"meta.pkl names the held-out poets: {meta['held_out']}"


def test_meta_holds_the_ci_patterns(tmp_path, tree):
    meta = records(prepare(tmp_path, tree["npm"], "--include=tang,ci")[0])[0]
    assert meta["ci_forms"] == {"如梦令": RUMENGLING}, \
        f"one pattern, the one most 如梦令 share; none for a lone 忆秦娥 or 失调名: {meta['ci_forms']}"
    c = poetry.constraint_for(meta, form="如梦令", prompt="\n")
    assert c is not None and c.max_new_tokens > 30, "meta.pkl's patterns should drive --form=如梦令"
    assert records(prepare(tmp_path, tree["npm"], name="tang")[0])[0]["ci_forms"] == {}, "no 词 included, no patterns"


@pytest.fixture
def prepared(tmp_path, tree):
    """An out_dir with a good dataset, and a snapshot of its files to check that failures leave it alone."""
    out, _ = prepare(tmp_path, tree["repo"])
    return out, {name: (out / name).read_bytes() for name in OUTPUTS}


def assert_untouched(out, snapshot):
    for name, data in snapshot.items():
        assert (out / name).read_bytes() == data, f"a failed run changed {name}"
    left = [n for n in os.listdir(out) if n not in snapshot and not n.endswith(".tgz")]
    assert not left, f"a failed run left files behind: {left}"


def test_no_tarball_and_no_npm_says_both_ways(tmp_path, prepared):
    out, snapshot = prepared
    proc = run(SCRIPT, f"--out_dir={out}", env_extra={"PATH": str(tmp_path / "nothing-here")})
    assert_user_error(proc, "npm pack chinese-poetry@2.0.1", "--input")
    assert_untouched(out, snapshot)


def test_a_wrong_tarball_is_refused(tmp_path, prepared):
    out, snapshot = prepared
    (out / poetry_prepare.TARBALL).write_bytes(b"not the package")
    assert_user_error(run(SCRIPT, f"--out_dir={out}"), "sha512", "delete it")
    assert_untouched(out, snapshot)
    os.remove(out / poetry_prepare.TARBALL)
    fake = tmp_path / "bin"  # an npm whose pack writes a wrong file: it must not be kept
    fake.mkdir()
    (fake / "npm").write_text(f"#!/bin/sh\necho junk > {poetry_prepare.TARBALL}\n")
    os.chmod(fake / "npm", 0o755)
    assert_user_error(run(SCRIPT, f"--out_dir={out}", env_extra={"PATH": str(fake)}), "sha512")
    assert_untouched(out, snapshot)
    assert not os.path.exists(out / poetry_prepare.TARBALL), "a tarball that failed its check must not stay"


def test_check_tarball_compares_sha512(tmp_path):
    path = tmp_path / "x.tgz"
    path.write_bytes(b"babygpt")
    digest = base64.b64encode(hashlib.sha512(b"babygpt").digest()).decode()
    poetry_prepare.check_tarball(str(path), digest)  # the right digest passes
    with pytest.raises(UserError, match="sha512"):
        poetry_prepare.check_tarball(str(path), base64.b64encode(b"0" * 64).decode())


def test_bad_inputs_are_one_line(tmp_path, tree, prepared):
    out, snapshot = prepared
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken" / "全唐诗"
    broken.mkdir(parents=True)
    (broken / "poet.tang.0.json").write_text('[{"title": "x", "paragraphs": ["', encoding="utf-8")
    not_tar = tmp_path / "x.tgz"
    not_tar.write_bytes(b"plain bytes")
    cases = [([f"--input={tree['repo']}", "--include=tang,qu"], ["--include=tang,qu", "ci (宋词)"]),
             ([f"--input={tmp_path / 'nope'}"], ["no such file"]),
             ([f"--input={empty}"], ["poet.tang.N.json", "--input"]),
             ([f"--input={broken.parent}"], ["poet.tang.0.json", "not valid JSON"]),
             ([f"--input={not_tar}"], ["not a readable tarball"]),
             ([f"--input={tree['repo']}", "--val_fraction=2"], ["--val_fraction=2"]),
             ([f"--input={tree['repo']}", "--block_size=100000"], ["--block_size=100000"]),
             ([f"--input={tree['repo']}", "--script=latin"], ["--script"]),
             ([f"--input={tree['repo']}", "--include=tang,song", "--hold_out=苏试"], ["--hold_out=苏试", "苏轼"]),
             ([f"--input={tree['repo']}", "--hold_out=苏轼"], ["--hold_out=苏轼", "no poem"])]
    for args, words in cases:
        assert_user_error(run(SCRIPT, *args, f"--out_dir={out}"), *words)
        assert_untouched(out, snapshot)


def test_meta_is_plain_data(tmp_path, tree):
    out, _ = prepare(tmp_path, tree["npm"], "--include=tang,ci")
    with open(out / "meta.pkl", "rb") as f:
        plain = pickle.load(f)
    assert load_meta(str(out / "meta.pkl")) == plain, "checkpoint.load_meta's safe unpickler should read all of it"
