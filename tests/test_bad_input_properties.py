"""Property tests (Hypothesis): arbitrary bytes in a raw dump and arbitrary YAML in a search
space or config give a one-line error or a counted skip, never a traceback.

Allowed outcomes are the project's errors (:class:`~raysearch.errors.RaysearchError`) and I/O
errors: exactly what the CLI's ``guarded`` reports in one line.  Example counts stay small
so the suite stays fast; the strategies mix valid fragments in so parsing gets deep.

"Never crashes" alone passes for a parser that refuses everything, so each ``..._never_crash``
property also loads one generated well-formed file per example and checks it loads with exactly
the values written, and each parser also has an ``..._accepts_valid_...`` property doing only that.
"""
from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import math
import tempfile
import zlib
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from raysearch.data.adapters import amazon, movielens, pinterest
from raysearch.data.adapters.common import Report, iter_lines
from raysearch.errors import RaysearchError

EXPECTED = (RaysearchError, OSError)
FAST = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _lines(*fragments: str) -> st.SearchStrategy[bytes]:
    """Files of lines mixing valid-looking fragments, random text and random bytes."""
    line = st.one_of(st.sampled_from([f.encode() for f in fragments]), st.text(max_size=40).map(str.encode), st.binary(max_size=40))
    body = st.lists(line, max_size=12).map(lambda ls: b"\n".join(ls))
    return st.one_of(body, body.map(gzip.compress), st.binary(max_size=200))


_TMP = tempfile.TemporaryDirectory(prefix="rs-prop-")  # one folder per module run, removed at exit


def _file(name: str, data: bytes) -> Path:
    d = Path(tempfile.mkdtemp(dir=_TMP.name))
    (d / name).write_bytes(data)
    return d / name


def _report() -> Report:
    return Report("x", "x", Path("."), None, {})


def _names_the_file(e: BaseException, *paths: Path) -> None:
    """An allowed error is one line naming the file it is about."""
    msg = str(e)
    assert "\n" not in msg and any(p.name in msg for p in paths), msg


ML_MOVIES = ("movieId,title,genres", '1,"A, The (1995)",Drama|Comedy', "2,B,(no genres listed)", "x,y,z", "1::T::Drama")
ML_RATINGS = ("userId,movieId,rating,timestamp", "1,1,4.0,1", "1,1,nan,2", "2,1,inf,x", "1::1::5::9")

# Each ``..._never_crash`` property also loads one generated well-formed file and checks its values
# (the ``_check_*`` helpers, shared with the ``..._accepts_valid_...`` properties): a parser that
# refused everything would pass "never crashes" alone.

GENRES = ["Drama", "Comedy", "Sci-Fi", "Film-Noir", movielens.NO_GENRE]
TITLE = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters=":\ufeff"),
                max_size=20)
MOVIES = st.lists(st.tuples(st.integers(0, 10**9), TITLE, st.lists(st.sampled_from(GENRES), max_size=4)),
                  min_size=1, max_size=8, unique_by=lambda m: m[0])
RATINGS = st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from([1, 2, 3]),
                             st.floats(0, 5, allow_nan=False), st.integers(0, 2**40)),
                   min_size=1, max_size=10, unique=True)


def _ml_file(name: str, dat: bool, header: list[str], rows: list[list[str]]) -> Path:
    if dat:
        return _file(name + ".dat", "".join("::".join(r) + "\n" for r in rows).encode("latin-1"))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return _file(name + ".csv", buf.getvalue().encode())


def _check_movies(movies: list, dat: bool) -> None:
    if dat:  # the .dat format is latin-1 and '::'-separated: titles within it
        movies = [(m, t.encode("latin-1", "replace").decode("latin-1"), g) for m, t, g in movies]
    path = _ml_file("movies", dat, movielens.MOVIES_HEADER, [[str(m), t, "|".join(g)] for m, t, g in movies])
    got = movielens._read_movies(path, _report())
    first = 1 if dat else 2  # a CSV's line 1 is its header
    assert got == {m: (first + i, [x for x in dict.fromkeys(g) if x != movielens.NO_GENRE])
                   for i, (m, _, g) in enumerate(movies)}


def _check_ratings(ratings: list, dat: bool) -> None:
    path = _ml_file("ratings", dat, movielens.RATINGS_HEADER, [[str(u), str(m), repr(r), str(t)] for u, m, r, t in ratings])
    cols = movielens._read_ratings(path, _report(), None, {1, 2, 3})
    assert [list(c) for c in cols] == [list(c) for c in zip(*ratings)]


@FAST
@given(data=_lines(*ML_MOVIES), dat=st.booleans(), valid=MOVIES)
def test_movielens_movies_never_crash(data, dat, valid):
    path = _file("movies.dat" if dat else "movies.csv", data)
    try:
        movielens._read_movies(path, _report())
    except EXPECTED as e:
        _names_the_file(e, path)
    _check_movies(valid, dat)


@FAST
@given(data=_lines(*ML_RATINGS), dat=st.booleans(), valid=RATINGS)
def test_movielens_ratings_never_crash(data, dat, valid):
    path = _file("ratings.dat" if dat else "ratings.csv", data)
    try:
        movielens._read_ratings(path, _report(), None, {1, 2})
    except EXPECTED as e:
        _names_the_file(e, path)
    _check_ratings(valid, dat)


@FAST
@given(movies=MOVIES, dat=st.booleans())
def test_movielens_movies_accepts_valid_files(movies, dat):
    _check_movies(movies, dat)


@FAST
@given(ratings=RATINGS, dat=st.booleans())
def test_movielens_ratings_accepts_valid_files(ratings, dat):
    _check_ratings(ratings, dat)


AMZ = ('{"reviewerID": "u", "asin": "a", "overall": 5.0, "unixReviewTime": 1}', '{"reviewerID": 1}', "[1, 2]",
       "{'asin': 'a', 'categories': [['Toys', 'Dolls']], 'imUrl': 'http://x'}", "{'asin': 'b', 'x': (1,) * 9}",
       '{"asin": "c", "category": ["A", "B"]}', "{'asin': " + "[" * 300)
IDS = st.text("abcXYZ0189", min_size=1, max_size=6)
REVIEWS = st.lists(st.tuples(IDS, IDS, st.floats(1, 5, allow_nan=False), st.integers(0, 2**40)),
                   min_size=1, max_size=8, unique_by=lambda r: r[:2])
ASINS = st.lists(IDS, min_size=1, max_size=8, unique=True)


def _check_reviews(reviews: list) -> None:
    lines = [json.dumps({"reviewerID": u, "asin": a, "overall": r, "unixReviewTime": t}) for u, a, r, t in reviews]
    df = amazon.read_reviews(_file("r.json.gz", gzip.compress("\n".join(lines).encode())), _report())
    assert list(df.itertuples(index=False, name=None)) == reviews


def _check_meta(asins: list, year: str, data) -> None:
    recs = [{"asin": a, "title": data.draw(st.text(max_size=10)), "categories" if year == "2014" else "category":
             [["Toys", "Dolls"]] if year == "2014" else ["Toys", "Dolls"]} for a in asins]
    lines = [repr(r) if year == "2014" else json.dumps(r) for r in recs]
    path = _file("m.json.gz", gzip.compress("\n".join(lines).encode("utf-8", "surrogatepass")))
    assert amazon.read_meta(path, year, None, _report()) == {r["asin"]: r for r in recs}
    wanted = set(asins[::2])
    assert amazon.read_meta(path, year, wanted, _report()) == {r["asin"]: r for r in recs if r["asin"] in wanted}


@FAST
@given(data=_lines(*AMZ), year=st.sampled_from(["2014", "2018"]), reviews=REVIEWS, asins=ASINS, draw=st.data())
def test_amazon_parsers_never_crash(data, year, reviews, asins, draw):
    path = _file("f.json.gz", data)
    for parse in (lambda: amazon.read_reviews(path, _report()), lambda: amazon.read_meta(path, year, None, _report()),
                  lambda: amazon.read_meta(path, year, {"a"}, _report())):
        try:
            parse()
        except EXPECTED as e:
            _names_the_file(e, path)
    _check_reviews(reviews)
    _check_meta(asins, year, draw)


@FAST
@given(reviews=REVIEWS)
def test_amazon_reviews_accepts_valid_files(reviews):
    _check_reviews(reviews)


@FAST
@given(asins=ASINS, year=st.sampled_from(["2014", "2018"]), data=st.data())
def test_amazon_meta_accepts_valid_files(asins, year, data):
    _check_meta(asins, year, data)


PIN = ("Art|1", "Food|2", "|", "1|u1|1|b", "2|u2|Food|b", "3||1|b", "x|y")
NAMES = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp", "Zs"), blacklist_characters="|\ufeff"),
               min_size=1, max_size=10)
PIN_IDS = st.lists(st.integers(0, 999), min_size=1, max_size=6, unique=True)
PIN_NAMES = st.lists(NAMES, min_size=6, max_size=6, unique=True)


def _check_pinterest(ids: list, names: list, data) -> None:
    cats = {str(i): n for i, n in zip(ids, names)}
    repins = data.draw(st.lists(st.tuples(IDS, IDS, st.sampled_from(sorted(cats))), min_size=1, max_size=10))
    by_id, rank = pinterest.read_categories(_file("ImageCategoryID.txt", "".join(
        f"{name}|{lid}\n" for lid, name in cats.items()).encode()), _report())
    assert by_id == cats
    assert rank == {cats[str(i)]: r for r, i in enumerate(sorted(ids))}  # ranked by label id
    users, counts = pinterest.read_repins(_file("ImageDatasetRepinactivity", "".join(
        f"{pin}|{user}|{lid}|board\n" for pin, user, lid in repins).encode()), by_id, _report())
    want_users: dict = {}
    want_counts: dict = {}
    for n, (pin, user, lid) in enumerate(repins, 1):
        want_users.setdefault(pin, {}).setdefault(user, n)  # the first line of each (user, pin)
        want_counts.setdefault(pin, {}).setdefault(cats[lid], 0)
        want_counts[pin][cats[lid]] += 1  # every repin counts for the pin's category
    assert {p: dict(u) for p, u in users.items()} == want_users
    assert {p: dict(c) for p, c in counts.items()} == want_counts


@FAST
@given(cats=_lines(*PIN), repins=_lines(*PIN), ids=PIN_IDS, names=PIN_NAMES, data=st.data())
def test_pinterest_parsers_never_crash(cats, repins, ids, names, data):
    cats_path, repins_path = _file("ImageCategoryID.txt", cats), _file("ImageDatasetRepinactivity", repins)
    try:
        by_id, _ = pinterest.read_categories(cats_path, _report())
        pinterest.read_repins(repins_path, by_id, _report())
    except EXPECTED as e:
        _names_the_file(e, cats_path, repins_path)
    _check_pinterest(ids, names, data)


@FAST
@given(ids=PIN_IDS, names=PIN_NAMES, data=st.data())
def test_pinterest_parsers_accept_valid_files(ids, names, data):
    _check_pinterest(ids, names, data)


LINE_TEXT = st.lists(st.one_of(st.text(max_size=20), st.sampled_from(["", "\r", "\r\n", "é", "\ufeff", "a\x00b"])),
                     max_size=8).map("\n".join)


def _truncated_gzip_failure(stored: bytes) -> tuple[str, int]:
    """What reading a truncated gzip stream must report: the first error met and its line.

    The readable prefix is what zlib recovers.  Bytes in it that are not UTF-8 are met first
    ("not utf-8 text", on the line holding them); otherwise the stream ends early ("gzip") on the
    line after the last complete one (a trailing CR is not complete: a LF may follow it)."""
    prefix = zlib.decompressobj(wbits=31).decompress(stored)  # 31: gzip header; a truncated stream is no error
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(prefix, final=False)
    except UnicodeDecodeError as e:
        return "not utf-8 text", prefix[:e.start].count(b"\n") + 1
    text = text[:-1] if text.endswith("\r") else text
    lines = io.StringIO(text, newline="").readlines()
    complete = len(lines) - (1 if lines and not lines[-1].endswith(("\n", "\r")) else 0)
    return "gzip", complete + 1


def test_truncated_gzip_failure_by_hand():
    """The oracle above on hand-made streams (each cut where the line count is known)."""
    def cut(raw: bytes) -> bytes:  # a stream that ends right after ``raw``'s bytes: flushed, never finished
        z = zlib.compressobj(wbits=31)
        return z.compress(raw) + z.flush(zlib.Z_SYNC_FLUSH)

    assert _truncated_gzip_failure(cut(b"")) == ("gzip", 1)
    assert _truncated_gzip_failure(cut(b"a\nb\r\nc")) == ("gzip", 3)
    assert _truncated_gzip_failure(cut(b"a\nb\r")) == ("gzip", 2)
    assert _truncated_gzip_failure(cut(b"a\nb\n\xff")) == ("not utf-8 text", 3)
    for raw, want in [(b"", 1), (b"a\nb\r\nc", 3), (b"a\nb\r", 2), (b"a\nb\n", 3)]:
        with pytest.raises(RaysearchError, match=f":{want}: corrupt or truncated gzip"):
            list(iter_lines(_file("t.gz", cut(raw))))


@FAST
@given(data=st.one_of(st.binary(max_size=300), LINE_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))),
       mode=st.sampled_from(["plain", "gzip", "truncated gzip"]))
def test_iter_lines_reports_the_file_and_a_real_line(data, mode):
    """Readable input yields exactly its lines (numbered from 1, split as text files are); bytes
    that are not UTF-8 name the first line holding one; a truncated gzip stream is refused."""
    packed = gzip.compress(data)
    stored = {"plain": data, "gzip": packed, "truncated gzip": packed[: len(packed) // 2]}[mode]
    path = _file("f", stored)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        text, bad_line = None, data[: e.start].count(b"\n") + 1
    try:
        got = list(iter_lines(path))
    except RaysearchError as e:
        msg = str(e)
        assert msg.startswith(f"{path}:") and "\n" not in msg, msg
        line = int(msg[len(str(path)) + 1:].split(":")[0])
        if mode == "truncated gzip":
            what, want_line = _truncated_gzip_failure(stored)
            assert what in msg and line == want_line, (msg, what, want_line)
        elif mode == "plain" and data[:2] == b"\x1f\x8b":  # random bytes that are gzip by content
            assert "gzip" in msg or (text is None and "not utf-8 text" in msg), msg  # whichever comes first
            assert line >= 1
        else:
            assert text is None, f"valid UTF-8 refused: {msg}"
            assert line == bad_line and "not utf-8 text" in msg, (msg, bad_line)
    else:
        assert mode != "truncated gzip", "a truncated gzip stream was read as complete"
        assert text is not None, "bytes that are not UTF-8 were accepted"
        want = [(n, ln.rstrip("\r\n")) for n, ln in enumerate(io.StringIO(text, newline=""), 1)]
        assert got == want


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(movies=_lines(*ML_MOVIES), ratings=_lines(*ML_RATINGS))
def test_prepare_cli_on_arbitrary_dumps_is_one_line_or_a_report(movies, ratings):
    from PIL import Image
    from typer.testing import CliRunner

    from raysearch.cli import app

    raw = Path(tempfile.mkdtemp(dir=_TMP.name))
    (raw / "movies.csv").write_bytes(movies)
    (raw / "ratings.csv").write_bytes(ratings)
    (raw / "posters").mkdir()
    Image.new("RGB", (4, 4)).save(raw / "posters" / "1.jpg")
    res = CliRunner().invoke(app, ["prepare", "-d", "movielens", "--raw", str(raw), "--data-root", str(raw / "h"), "--json"])
    assert res.exit_code in (0, 2), (res.exception, res.stderr)
    assert "Traceback" not in res.stderr
    if res.exit_code == 2:
        assert len([l for l in res.stderr.splitlines() if l.startswith("error:")]) == 1


# ----------------------------------------------------------------------------- YAML

KEYS = st.sampled_from(["base", "params", "asha", "train", "cf", "split", "dataset", "train.lr", "cf.dim",
                        "train.method", "type", "low", "high", "log", "step", "choices", "when", "max_t", "lr", "x"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["float", "int", "categorical", "mtl", "resnet18"]))
VALUES = st.recursive(SCALARS, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(
    st.one_of(KEYS, SCALARS.filter(lambda v: v is not None)), c, max_size=4)), max_leaves=20)
YAML_TEXT = st.one_of(
    st.dictionaries(KEYS, VALUES, max_size=4).map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)


# --- well-formed YAML must load, with the values written (floats in every notation, 1e-4 included)


def _float(x: float, style: str) -> tuple[str, float]:
    """``x`` written in one of the notations people use, and the value that text stands for."""
    text = {"repr": repr(x), "e": f"{x:e}", "E": f"{x:.3E}", "g": f"{x:g}",
            "short": f"{x:.0e}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")}[style]
    return text, float(text)


STYLES = st.sampled_from(["repr", "e", "E", "g", "short"])
BOOLS = {"true": True, "false": False, "True": True, "no": False, "yes": True, "off": False}


@st.composite
def _values(draw, kind: str, values: st.SearchStrategy) -> tuple[str, object]:
    """(YAML text, the value it must load as) for a config field of ``kind``."""
    v = draw(values)
    if kind == "float":
        return _float(v, draw(STYLES))
    if kind == "bool":
        t = draw(st.sampled_from([k for k, b in BOOLS.items() if b is v]))
        return t, BOOLS[t]
    if kind == "str":
        return draw(st.sampled_from([v, json.dumps(v), f"'{v}'"])), v
    if kind == "list":
        return json.dumps(v), v
    if v is None:
        return draw(st.sampled_from(["null", "~"])), None
    return str(v), v


RUN_FIELDS = {
    "dataset": None,
    "train": {"lr": ("float", st.floats(1e-6, 10)), "alpha": ("float", st.floats(0, 10)),
              "omega": ("float", st.floats(0.01, 10)), "weight_decay": ("float", st.floats(0, 1)),
              "epochs": ("int", st.integers(1, 100)), "optimizer": ("str", st.sampled_from(["adamw", "sgd"])),
              "trainable_blocks": ("int", st.none() | st.integers(0, 8)), "cf_standardize": ("bool", st.booleans())},
    "cf": {"lr": ("float", st.floats(1e-6, 10)), "dim": ("int", st.integers(1, 512)),
           "hidden": ("list", st.lists(st.integers(1, 512), max_size=3)), "model": ("str", st.sampled_from(["vaecf", "bpr"]))},
    "split": {"seed": ("int", st.integers(0, 2**31)), "label_ratio": ("float", st.floats(0.01, 1.0))},
}


@st.composite
def run_config_texts(draw) -> tuple[list[tuple[str, list[tuple[str, str]]]], dict, bool]:
    """(sections as [(key, text)] lists, the mapping they must load as, flow style?)."""
    sections, want = [], {}
    for section, fields in RUN_FIELDS.items():
        if fields is None:
            continue
        keys = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=len(fields)))
        pairs = []
        for k in keys:
            text, value = draw(_values(*fields[k]))
            pairs.append((k, text))
            want.setdefault(section, {})[k] = value
        if pairs:
            sections.append((section, pairs))
    return sections, want, draw(st.booleans())


def _render(sections: list, flow: bool) -> str:
    if flow:
        return "".join(f"{name}: {{{', '.join(f'{k}: {t}' for k, t in pairs)}}}\n" for name, pairs in sections)
    return "".join(f"{name}:\n" + "".join(f"  {k}: {t}\n" for k, t in pairs) for name, pairs in sections)


def _check_run_config(spec, data) -> None:
    """A well-formed config loads as exactly what it says; the same key written twice is refused."""
    from raysearch.config import ConfigError, RunConfig, from_dict, load_run_config

    sections, want, flow = spec
    path = _file("run.yaml", _render(sections, flow).encode())
    assert load_run_config(path) == from_dict(RunConfig, want)
    if not sections:
        return
    i = data.draw(st.integers(0, len(sections) - 1))
    name, pairs = sections[i]
    key, text = data.draw(st.sampled_from(pairs))
    twice = [*sections[:i], (name, [*pairs, (key, text)]), *sections[i + 1:]]  # the same line again: still refused
    path.write_text(_render(twice, flow))
    with pytest.raises(ConfigError, match="defined twice") as e:
        load_run_config(path)
    assert str(e.value).startswith(f"{path}: key '{name}.{key}' ") and "\n" not in str(e.value)


@st.composite
def space_texts(draw) -> tuple[list[tuple[str, str]], list[tuple]]:
    """(params as [(name, flow-mapping text)], the (name, kind, low, high, log, step, choices, when) they must load as)."""
    params: list[tuple[str, str]] = []
    want: list[tuple] = []

    def numeric(name: str, kind: str, low: float, high: float, log: bool = False, step=None, when=None):
        lo_t, lo = _float(low, draw(STYLES)) if kind == "float" else (str(low), low)
        hi_t, hi = _float(high, draw(STYLES)) if kind == "float" else (str(high), high)
        assume(lo < hi)
        extra = (", log: true" if log else "") + (f", step: {step}" if step else "")
        extra += f", when: {{train.weighting: {json.dumps(list(when[0][1]))}}}" if when else ""
        params.append((name, f"{{type: {kind}, low: {lo_t}, high: {hi_t}{extra}}}"))
        want.append((name, kind, lo, hi, log, step, (), when or ()))

    weighting = None
    if draw(st.booleans()):
        weighting = tuple(draw(st.lists(st.sampled_from(["uniform", "interaction", "loss"]), min_size=1, unique=True)))
        params.append(("train.weighting", f"{{type: categorical, choices: {json.dumps(list(weighting))}}}"))
        want.append(("train.weighting", "categorical", None, None, False, None, weighting, ()))
    if draw(st.booleans()):
        low = draw(st.floats(0, 2))
        numeric("train.alpha", "float", low, low + draw(st.floats(0.1, 5)))
    if draw(st.booleans()):
        low = draw(st.floats(1e-6, 1e-3))
        numeric("train.lr", "float", low, low * draw(st.floats(2, 1000)), log=True)
    if draw(st.booleans()):
        low = draw(st.floats(0.5, 2))
        when = None
        if weighting and draw(st.booleans()):
            when = (("train.weighting", tuple(draw(st.lists(st.sampled_from(weighting), min_size=1, unique=True)))),)
        numeric("train.omega", "float", low, low + draw(st.floats(0.5, 5)), when=when)
    if draw(st.booleans()):
        low = draw(st.integers(1, 16))
        numeric("cf.dim", "int", low, low + draw(st.integers(1, 64)), step=draw(st.none() | st.integers(1, 4)))
    if draw(st.booleans()) or not params:
        texts = [draw(_values("float", st.floats(0, 1))) for _ in range(draw(st.integers(1, 4)))]
        assume(len({v for _, v in texts}) == len(texts))
        params.append(("train.weight_decay", f"{{type: categorical, choices: [{', '.join(t for t, _ in texts)}]}}"))
        want.append(("train.weight_decay", "categorical", None, None, False, None, tuple(v for _, v in texts), ()))
    return params, want


def _check_space(spec, data) -> None:
    """A well-formed space loads with the bounds and choices written; a parameter defined twice is refused."""
    from raysearch.config import ConfigError
    from raysearch.search.space import load_space

    params, want = spec
    render = lambda ps: "params:\n" + "".join(f"  {n}: {t}\n" for n, t in ps)  # noqa: E731
    path = _file("space.yaml", render(params).encode())
    space = load_space(path)
    assert [(p.name, p.kind, p.low, p.high, p.log, p.step, p.choices, p.when) for p in space.params] == want
    name, text = data.draw(st.sampled_from(params))
    path.write_text(render([*params, (name, text)]))
    with pytest.raises(ConfigError, match="defined twice") as e:
        load_space(path)
    assert str(e.value).startswith(f"{path}: key 'params.{name}' ") and "\n" not in str(e.value)


@FAST
@given(spec=run_config_texts(), data=st.data())
def test_run_config_loader_accepts_valid_files(spec, data):
    _check_run_config(spec, data)


@FAST
@given(spec=space_texts(), data=st.data())
def test_search_space_loader_accepts_valid_files(spec, data):
    _check_space(spec, data)


@FAST
@given(text=YAML_TEXT, spec=space_texts(), data=st.data())
def test_search_space_loader_never_crashes(text, spec, data):
    from raysearch.config import ConfigError
    from raysearch.search.space import load_space

    path = _file("space.yaml", text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    try:
        load_space(path)
    except ConfigError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e), str(e)
    _check_space(spec, data)  # and a well-formed space still loads, with its values


@FAST
@given(text=YAML_TEXT, spec=run_config_texts(), data=st.data())
def test_run_config_loader_never_crashes(text, spec, data):
    from raysearch.config import ConfigError, load_run_config

    path = _file("run.yaml", text.encode("utf-8", "surrogatepass"))
    try:
        load_run_config(path)
    except ConfigError as e:  # "{path}: ..." or, for a section, "{path}.train: ..."
        assert str(e).startswith(str(path)) and "\n" not in str(e), str(e)
    _check_run_config(spec, data)  # and a well-formed config still loads, with its values


@pytest.mark.parametrize("depth", [3, 9])
def test_alias_bomb_is_refused_fast_and_short(tmp_path, depth):
    from raysearch.config import ConfigError, load_run_config
    from raysearch.search.space import load_space

    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, depth)]
    lines += [f"base: {{train: {{lr: *l{depth - 1}}}}}"]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    for load in (load_space, load_run_config):
        with pytest.raises(ConfigError, match="aliases") as e:
            load(path)
        assert len(str(e.value)) < 600
