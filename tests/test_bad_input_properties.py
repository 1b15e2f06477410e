"""Property tests (Hypothesis): arbitrary bytes in a raw dump and arbitrary YAML in a search
space or config give a one-line error or a counted skip, never a traceback.

Allowed outcomes are the project's errors (:class:`~raysearch.errors.RaysearchError`) and I/O
errors: exactly what the CLI's ``guarded`` reports in one line.  Example counts stay small
so the suite stays fast; the strategies mix valid fragments in so parsing gets deep.
"""
from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
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


def _file(name: str, data: bytes) -> Path:
    d = Path(tempfile.mkdtemp(prefix="rs-prop-"))
    (d / name).write_bytes(data)
    return d / name


def _report() -> Report:
    return Report("x", "x", Path("."), None, {})


ML_MOVIES = ("movieId,title,genres", '1,"A, The (1995)",Drama|Comedy', "2,B,(no genres listed)", "x,y,z", "1::T::Drama")
ML_RATINGS = ("userId,movieId,rating,timestamp", "1,1,4.0,1", "1,1,nan,2", "2,1,inf,x", "1::1::5::9")


@FAST
@given(data=_lines(*ML_MOVIES), dat=st.booleans())
def test_movielens_movies_never_crash(data, dat):
    path = _file("movies.dat" if dat else "movies.csv", data)
    try:
        movielens._read_movies(path, _report())
    except EXPECTED:
        pass


@FAST
@given(data=_lines(*ML_RATINGS), dat=st.booleans())
def test_movielens_ratings_never_crash(data, dat):
    path = _file("ratings.dat" if dat else "ratings.csv", data)
    try:
        movielens._read_ratings(path, _report(), None, {1, 2})
    except EXPECTED:
        pass


AMZ = ('{"reviewerID": "u", "asin": "a", "overall": 5.0, "unixReviewTime": 1}', '{"reviewerID": 1}', "[1, 2]",
       "{'asin': 'a', 'categories': [['Toys', 'Dolls']], 'imUrl': 'http://x'}", "{'asin': 'b', 'x': (1,) * 9}",
       '{"asin": "c", "category": ["A", "B"]}', "{'asin': " + "[" * 300)


@FAST
@given(data=_lines(*AMZ), year=st.sampled_from(["2014", "2018"]))
def test_amazon_parsers_never_crash(data, year):
    path = _file("f.json.gz", data)
    for parse in (lambda: amazon.read_reviews(path, _report()), lambda: amazon.read_meta(path, year, None, _report()),
                  lambda: amazon.read_meta(path, year, {"a"}, _report())):
        try:
            parse()
        except EXPECTED:
            pass


PIN = ("Art|1", "Food|2", "|", "1|u1|1|b", "2|u2|Food|b", "3||1|b", "x|y")


@FAST
@given(cats=_lines(*PIN), repins=_lines(*PIN))
def test_pinterest_parsers_never_crash(cats, repins):
    try:
        by_id, _ = pinterest.read_categories(_file("ImageCategoryID.txt", cats), _report())
        pinterest.read_repins(_file("ImageDatasetRepinactivity", repins), by_id, _report())
    except EXPECTED:
        pass


@FAST
@given(data=st.binary(max_size=300), gz=st.booleans())
def test_iter_lines_reports_the_file_and_a_real_line(data, gz):
    path = _file("f", gzip.compress(data)[: max(2, len(data) // 2)] if gz else data)
    try:
        n = sum(1 for _ in iter_lines(path))
    except RaysearchError as e:
        assert str(e).startswith(f"{path}:")
        line = int(str(e)[len(str(path)) + 1:].split(":")[0])
        assert 1 <= line <= data.count(b"\n") + 1 or gz
    else:
        assert n >= 0


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(movies=_lines(*ML_MOVIES), ratings=_lines(*ML_RATINGS))
def test_prepare_cli_on_arbitrary_dumps_is_one_line_or_a_report(movies, ratings):
    from PIL import Image
    from typer.testing import CliRunner

    from raysearch.cli import app

    raw = Path(tempfile.mkdtemp(prefix="rs-prop-"))
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


@FAST
@given(text=YAML_TEXT)
def test_search_space_loader_never_crashes(text):
    from raysearch.config import ConfigError
    from raysearch.search.space import load_space

    path = _file("space.yaml", text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    try:
        load_space(path)
    except ConfigError as e:
        assert "\n" not in str(e).strip() or str(e).startswith(str(path))


@FAST
@given(text=YAML_TEXT)
def test_run_config_loader_never_crashes(text):
    from raysearch.config import ConfigError, load_run_config

    path = _file("run.yaml", text.encode("utf-8", "surrogatepass"))
    try:
        load_run_config(path)
    except ConfigError:
        pass


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
