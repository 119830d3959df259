"""The registry's HTML report, looked at in a real headless browser."""

import contextlib
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from _browser import load, screenshot

from sklearn_specsig.cli import main
from sklearn_specsig.registry import ModelIndex, write_report


def _cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


class _Page(HTMLParser):
    """The numbers of a report's tables, read back from its DOM."""

    def __init__(self):
        super().__init__()
        self.queries = {}  # model -> [(name, family, similarity, p_value)]
        self.verdicts = []  # (family, p_value) in page order
        self.status = None
        self.images = []
        self.embedded = ""
        self._table = self._row = self._cell = None
        self._in_json = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "query" in (attrs.get("class") or ""):
            self._table = self.queries.setdefault(attrs["data-model"], [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = attrs.get("data-value")
            self._row.append(self._cell if self._cell is not None else "")
        elif tag == "p" and "verdict" in (attrs.get("class") or ""):
            self.verdicts.append((attrs["data-family"], float(attrs["data-p-value"])))
        elif tag == "p" and attrs.get("id") == "render-status":
            self.status = (attrs.get("data-rendered"), attrs.get("data-total"))
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "script" and attrs.get("id") == "specsig-queries":
            self._in_json = True

    def handle_data(self, data):
        if self._in_json:
            self.embedded += data
        elif self._row is not None and self._cell is None and self._row:
            self._row[-1] += data.strip()

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:
                self._table.append(tuple(self._row))
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "script":
            self._in_json = False


@pytest.fixture(scope="module")
def registry(small_zoo, tmp_path_factory):
    """The small zoo's bases and first fine-tunes recorded by family; the
    second fine-tunes are the queries."""
    root = tmp_path_factory.mktemp("report")
    path = root / "registry.sqlite"
    recorded = [p for p in small_zoo.paths if not p.endswith("ft02")]
    for family in small_zoo.families:
        members = [p for p in recorded if family in p]
        code, _, err = _cli("index", "add", path, *members, "--family", family, "--no-progress")
        assert code == 0, err
    queries = [p for p in small_zoo.paths if p.endswith("ft02")][:2]
    return root, path, queries


@pytest.fixture(scope="module")
def report(registry):
    root, path, queries = registry
    code, out, err = _cli("index", "query", path, *queries, "--json", "--top", "4",
                          "--no-progress")
    assert code == 0, err
    page = root / "report.html"
    code, _, err = _cli("report", path, "-o", page, "--models", *queries, "--top", "4",
                        "--no-progress")
    assert code == 0, err
    return page, json.loads(out)


def test_report_loads_without_errors_and_its_figures_render(report, tmp_path):
    page, _ = report
    dom, console = load(page, tmp_path / "profile")
    assert console == []
    parsed = _Page()
    parsed.feed(dom)
    # The page's own script counts the figures the browser decoded.
    assert parsed.status == ("3", "3")  # heatmap, dendrogram, ESD
    shot = screenshot(page, tmp_path / "shot.png", tmp_path / "profile")
    pixels = shot[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    not_white = (pixels < 0.95).any(axis=2)
    assert not_white.mean() > 0.05  # text, tables and figures, not a blank page
    # Colour beyond grey: the heatmap and the family colours are drawn.
    colourful = np.ptp(pixels, axis=2) > 0.2
    assert colourful.mean() > 0.005


def test_report_numbers_equal_index_query_json(report, tmp_path):
    page, expected = report
    dom, _ = load(page, tmp_path / "profile")
    parsed = _Page()
    parsed.feed(dom)
    assert json.loads(parsed.embedded)["queries"] == expected["queries"]
    assert len(expected["queries"]) == 2
    for query, (family, p_value) in zip(expected["queries"], parsed.verdicts):
        assert (query["verdict"]["family"] or "-") == family
        assert query["verdict"]["p_value"] == p_value
        rows = parsed.queries[query["model"]]
        assert len(rows) == len(query["neighbours"]) == 4
        for row, nb in zip(rows, query["neighbours"]):
            assert row[0] == nb["name"] and row[1] == (nb["family"] or "-")
            assert float(row[2]) == nb["similarity"] and float(row[3]) == nb["p_value"]


def test_report_is_self_contained(report):
    page, _ = report
    text = page.read_text(encoding="utf-8")
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", text)
    assert links and all(link.startswith("data:image/png;base64,") for link in links)
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text


def test_the_browser_check_catches_a_broken_page(report, tmp_path):
    """The checks above can fail: a script error reaches the console and a
    damaged figure is not counted as rendered."""
    page, _ = report
    text = page.read_text(encoding="utf-8")
    broken = tmp_path / "broken.html"
    first = text.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken.write_text(text[:first] + "AAAA" + text[first + 4:].replace(
        "</body>", "<script>notAFunction();</script></body>"), encoding="utf-8")
    dom, console = load(broken, tmp_path / "profile")
    assert any("notAFunction" in line for line in console)
    parsed = _Page()
    parsed.feed(dom)
    assert parsed.status == ("2", "3")


def test_report_without_models_draws_a_recorded_esd(registry, tmp_path, count_solves):
    _, path, _ = registry
    page = tmp_path / "plain.html"
    before = count_solves()
    payload = write_report(ModelIndex(path), page)
    assert count_solves() == before  # the recorded model's spectra are in the registry
    assert payload["queries"] == []
    text = page.read_text(encoding="utf-8")
    first = ModelIndex(path).list()[0]["name"]  # the first recorded checkpoint, by name
    assert f'id="esd-model" data-model="{first}"' in text
    assert text.count('class="figure"') == 3


def test_report_of_arrays_says_why_there_is_no_esd(tmp_path):
    rng = np.random.default_rng(0)
    index = ModelIndex(tmp_path / "r.sqlite")
    index.add(rng.normal(size=(6, 7, 5)), names=[f"m{i}" for i in range(6)],
              families=["a", "a", "b", "b", "c", "c"])
    page = tmp_path / "r.html"
    write_report(index, page)
    text = page.read_text(encoding="utf-8")
    assert "No ESD: no recorded model has a checkpoint on record" in text
    assert text.count('class="figure"') == 2
    assert 'id="recorded"' in text and text.count("<tr>") >= 7


def test_names_cannot_break_the_page(tmp_path):
    """Names are data: a script-like name or a mathtext dollar is shown as is."""
    rng = np.random.default_rng(1)
    names = ['<!--<script>', "v$^$", 'a "quoted" & <b>bold</b>', "plain"]
    index = ModelIndex(tmp_path / "r.sqlite")
    index.add(rng.normal(size=(4, 7, 6)), names=names, families=["f1", "f1", "f2", "f2$"])
    page = tmp_path / "r.html"
    payload = write_report(index, page, models=[rng.normal(size=(7, 6))], names=["</script>"])
    dom, console = load(page, tmp_path / "profile")
    assert console == []
    parsed = _Page()
    parsed.feed(dom)
    assert parsed.status == ("2", "2")  # heatmap and tree; no checkpoint for an ESD
    assert json.loads(parsed.embedded)["queries"] == json.loads(
        json.dumps(payload["queries"]))
    assert set(parsed.queries) == {"</script>"}
    shown = {row[0] for row in parsed.queries["</script>"]}
    assert shown == set(names)
