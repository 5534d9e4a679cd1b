"""The book: clean notebooks, a complete table of contents, no hand-typed numbers, reproducible results,
and one strict executed build."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from retrieval_lib.infra import chapters, numerics, results

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHAPTERS = chapters.chapters(ROOT)
REQUIRED = [
    "marketplace.listings", "marketplace.users", "marketplace.queries", "marketplace.sessions",
    "marketplace.purchases", "bm25.recall@100.all", "bm25.recall@100.head", "bm25.recall@100.torso",
    "bm25.recall@100.tail", "bm25.recall@10.head", "bm25.ndcg@10.all", "popularity.recall@100.all",
    "graph.nodes", "graph.edges", "graph.coverage", "graph.neighbor_precision@10", "graph.fit_seconds",
    "term.recall@100.all", "term.recall@100.head", "term.recall@100.torso", "term.recall@100.tail",
    "transformer.scratch.recall@100.all", "transformer.scratch.recall@100.tail",
    "transformer.pretrained.recall@100.all", "transformer.pretrained.recall@100.tail",
    "transformer.pretrain_seconds", "transformer.params",
    "unified.recall@100.all", "unified.recall@100.head", "unified.recall@100.torso", "unified.recall@100.tail",
    "unified.ndcg@10.all", "unified.distance_p98", "ablation.no_location.distance_p98", "unified.train_seconds",
    *(f"ablation.no_{c}.recall@100.{s}" for c in ("graph", "term", "transformer", "history", "location")
      for s in ("all", "head", "tail")),
    *(f"oracle.recall@100.{s}" for s in ("all", "head", "torso", "tail")),
    *(f"oracle.ladder.{r}.recall@100.{s}" for r in ("query_no_location", "query", "history_text",
                                                     "history_posterior", "taste", "intent")
      for s in ("all", "head", "torso", "tail")),
    *(f"oracle.ladder.{g}_gain.{s}" for g in ("history", "text") for s in ("head", "tail")),
    # issue 25: comparisons of trained models over paired seeds and buyers (the multi-bootstrap)
    *(f"multiboot.{c}.recall@100.{s}.{f}" for c in ("graph", "term", "transformer", "history", "location")
      for s in ("all", "head", "tail") for f in ("mean", "ci_low", "ci_high")),
    *(f"multiboot.{study}.n_seeds" for study in ("pretraining", "ablations", "negatives", "losses", "boosting")),
    *(f"multiboot.pretraining.recall@100.{s}.{f}" for s in ("all", "head", "tail")
      for f in ("mean", "ci_low", "ci_high")),
    "seeds.unified.recall@100.all.sd_before", "seeds.unified.recall@100.all.sd_after", "seeds.unified.n_seeds",
    "seeds.history.arm_correlation",
    "unified.stopped_early", "transformer.pretrain_stopped_early", "unified.seeds.head_gap_min",
    "unified.seeds.head_gap_max",
    # issue 30: the history's headroom, what the taste block collects of it, over the paired seeds
    *(f"personalization.gain.recall@100.{s}" for s in ("all", "head", "tail")),
    "personalization.headroom.recall@100.head", "personalization.captured_share.head",
    "personalization.seed_gaps.head.min", "personalization.seed_gaps.head.max",
    "unified.history_overlap@100.head",
    *(f"negatives.{n}.recall@100.{s}" for n in ("inbatch", "uniform", "hard_from_start", "curriculum")
      for s in ("all", "head", "tail")),
    *(f"multiboot.negatives.{n}_minus_inbatch.recall@100.all.{f}" for n in ("uniform", "hard_from_start", "curriculum")
      for f in ("mean", "ci_low", "ci_high")),
    *(f"multiboot.negatives.curriculum_minus_hard_from_start.recall@100.all.{f}"
      for f in ("mean", "ci_low", "ci_high")),
    "negatives.false_negative_rate.top", "negatives.false_negative_rate.window",
    "negatives.refresh_seconds", "negatives.train_seconds",
    *(f"loss.{n}.recall@100.{s}" for n in ("softmax", "pairwise", "hinge") for s in ("all", "head", "tail")),
    *(f"loss.hinge.score_median.{k}" for k in ("purchase", "cart", "click", "negative")),
    *(f"prune.{n}.removed_at_keep95" for n in ("softmax", "pairwise", "hinge")),
    *(f"prune.{n}.{cut}.threshold_minus_top_n" for n in ("softmax", "pairwise", "hinge") for cut in ("cut", "cut95")),
    *(f"prune.{n}.cut.labels_kept" for n in ("softmax", "pairwise", "hinge")),
    *(f"loss.hinge.e_{k}" for k in ("purchase", "cart", "click", "neg")),
    *(f"multiboot.losses.{n}_minus_softmax.recall@100.{s}.{f}" for n in ("pairwise", "hinge")
      for s in ("all", "head", "tail") for f in ("mean", "ci_low", "ci_high")),
    "ann.hnsw.recall_vs_exact@100", "ann.hnsw.ms_per_query", "ann.exact.ms_per_query",
    "ann.exact_over_hnsw_time_ratio",
    "ann.faiss_ivfpq.recall_vs_exact@100", "ann.boosted.recall_vs_exact_min",
    *(f"boosting.{n}.recall@100.{s}" for n in ("none", "multiplicative", "additive") for s in ("all", "head", "tail")),
    *(f"multiboot.boosting.additive_minus_none.recall@100.all.{f}" for f in ("mean", "ci_low", "ci_high")),
    "boosting.trials", "boosting.tune_seconds",
    "abtest.control.purchase_rate", "abtest.treatment.purchase_rate", "abtest.lift", "abtest.lift_ci_low",
    "abtest.lift_ci_high", *(f"abtest.lift.{s}" for s in ("head", "torso", "tail")), "abtest.aa_ci_low",
    "abtest.aa_ci_high", "service.single.p99_ms", "service.open_loop.p99_ms", "service.saturation_rps",
    "abtest.aa_coverage", "abtest.aa_runs", "abtest.crn_width_ratio", "abtest.split_width_ratio",
    "ranker.ndcg@10.valid", "ranker.ndcg@10.logged_order", "abtest.rerank_only.lift", "abtest.rerank_only.ci_low",
    "abtest.rerank_only.ci_high", "abtest.fused.lift", "abtest.policy.purchase_rate",
    *(f"verdict.{k}" for k in ("pretraining", "term", "transformer", "location", "graph", "history",
                               "personalization", "negatives", "curriculum", "hinge", "boosting", "abtest")),
    "system.build_seconds",
    "build.pinned",
    # issue 28: the off-the-shelf encoder, zero-shot and as a frozen block
    *(f"pretrained_encoder.recall@100.{s}" for s in ("all", "head", "torso", "tail", "no_shared_word", "shared_word")),
    "pretrained_encoder.encode_seconds", "pretrained_encoder.model_mb",
    *(f"unified_with_pretrained.recall@100.{s}" for s in ("all", "head", "tail")),
    *(f"unified_with_pretrained.minus_unified.recall@100.{s}.{b}" for s in ("all", "head", "tail")
      for b in ("ci_low", "ci_high")),
    *(f"zero_shot.{m}.recall@100.no_shared_word" for m in ("bm25", "term", "transformer", "minilm", "unified")),
]
#: A decimal number or a percentage typed into prose: it must come from a glued value instead.
HAND_NUMBER = re.compile(r"(?<![\w.`])\d+(\.\d+)?\s?%|(?<![\w.`§])\d+\.\d+(?![\w.])")


def _markdown(nb_path: Path) -> list[str]:
    nb = nbformat.read(nb_path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def test_there_are_chapters():
    assert len(CHAPTERS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    assert all(cell.get("id") for cell in nb.cells), f"{path.name} has cells without an id (nbformat 4.5)"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapters_follow_the_book_structure(path):
    text = "\n".join(_markdown(path))
    for heading in ("## Learning goals", "## Summary", "## Exercises"):
        assert heading in text, f"{path.name} lacks {heading!r}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_exercises_are_numbered_in_order(path):
    text = "\n".join(_markdown(path))
    exercises = text.split("## Exercises", 1)[1].split("\n## ", 1)[0]
    numbers = [int(n) for n in re.findall(r"^(\d+)\. ", exercises, re.M)]
    assert len(numbers) >= 2 and numbers == list(range(1, len(numbers) + 1)), f"{path.name}: {numbers}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_exercise_has_a_hint_and_a_worked_solution(path):
    found = chapters.exercises(path)
    assert len(found) >= 2, f"{path.name}: {len(found)} exercises"
    assert [e.number for e in found] == list(range(1, len(found) + 1))
    for e in found:
        where = f"{path.name}, exercise {e.number}"
        assert e.text and e.hint and e.solution, f"{where}: a hint and a solution dropdown after the exercise"
        for code in e.code:
            compile(code, where, "exec")  # a syntax error fails here, before the tiny run
            assert not re.search(r"\b(record|glue)\(", code), f"{where}: a solution must not record figures"
            long = [line for line in code.splitlines() if len(line) > PAGE_COLUMNS]
            assert not long, f"{where}: solution lines over {PAGE_COLUMNS} characters: {long}"


def test_the_prefaces_solution_code_runs_on_a_results_file(tmp_path, monkeypatch, capsys):
    """The preface is not a chapter the tiny runs execute: its solution reads a built book's results."""
    (tmp_path / "book" / "_build").mkdir(parents=True)
    (tmp_path / "book" / "_build" / "results.json").write_text(json.dumps({"bm25.a": 1, "bm25.b": 2, "term.c": 3}))
    monkeypatch.chdir(tmp_path)
    codes = [code for e in chapters.exercises(NOTEBOOKS[0]) for code in e.code]
    assert NOTEBOOKS[0].name.startswith("00_") and codes
    for code in codes:
        exec(compile(code, "preface solution", "exec"), {})
    assert "('bm25', 2), ('term', 1)" in capsys.readouterr().out


def test_serving_and_bad_requests_are_taught_once_in_chapter_10():
    """Issue 27: chapter 6, the longest, no longer repeats the serving part of chapters 9 and 10."""
    def code(path: Path) -> str:
        return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")

    sources = {path.name[:2]: code(path) for path in CHAPTERS}
    unknown_user = re.compile(r"10\s*\*\*\s*9")  # the id the book's bad requests use
    assert [n for n, src in sources.items() if unknown_user.search(src)] == ["10"]
    thin = re.compile(r"[\"']query[\"']:\s*[\"'][\"']|\(\s*[\"'][\"'],\s*user\s*\)")  # empty query, known buyer
    assert [n for n, src in sources.items() if thin.search(src)] == ["10"]
    six = "\n".join(_markdown(ROOT / "notebooks" / "06_unified_model.ipynb"))
    assert "## Serving" not in six and "chapters 9 and 10" in six


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_prose_quotes_no_hand_typed_numbers(path):
    for source in _markdown(path):
        prose = re.sub(r"^```.*?^```$", "", source, flags=re.M | re.S)  # solutions' code blocks are code
        prose = re.sub(r"`[^`]*`", "", prose)  # inline code and glue roles are fine
        found = HAND_NUMBER.findall(prose)
        assert not HAND_NUMBER.search(prose), f"{path.name}: hand-typed number in prose: {found} in {source[:80]!r}"


#: Columns of code the book's page shows without scrolling (the theme's code box at 1280 px).
PAGE_COLUMNS = 88


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_code_fits_the_page(path):
    nb = nbformat.read(path, as_version=4)
    long = [line for cell in nb.cells if cell.cell_type == "code" for line in cell.source.splitlines()
            if len(line) > PAGE_COLUMNS]
    assert not long, f"{path.name}: {len(long)} code lines over {PAGE_COLUMNS} characters, e.g. {long[0]!r}"


def test_hand_number_pattern_catches_typed_figures():
    assert HAND_NUMBER.search("BM25 reaches 0.27 on head queries")
    assert HAND_NUMBER.search("only 12% of tail queries")
    assert not HAND_NUMBER.search("recall@100 for K = 10, 100, 1000 and §1")


def test_toc_lists_every_notebook_and_page():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert sorted(f"notebooks/{p.stem}" for p in NOTEBOOKS) == sorted(f for f in files if f.startswith("notebooks/"))
    for f in files:
        assert any((ROOT / f"{f}{ext}").is_file() for ext in (".md", ".ipynb")), f


def _build_script():
    spec = importlib.util.spec_from_file_location("book_build", ROOT / "book" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_build_schedule_names_real_chapters_and_keeps_latency_chapters_alone():
    build = _build_script()
    names = {p.stem for p in build.chapters()}
    assert names == {p.stem for p in NOTEBOOKS}
    named = set(build.NEEDS) | {n for needs in build.NEEDS.values() for n in needs}
    assert named | set(build.ALONE) | set(build.FIRST) <= names | set(build.JOBS)
    assert set(build.PASSIVE) <= names and not names & set(build.JOBS)
    # the chapters whose claims bound latencies or timing ratios run with nothing beside them
    assert {"09_ann_boosting", "10_whole_system"} <= set(build.ALONE)
    assert not set(build.ALONE) & set(build.PASSIVE)
    # every chapter from 2 on needs the world; no chapter waits on a later one
    def before(name):  # every chapter that must finish before ``name`` starts, transitively
        found = set(build.NEEDS.get(name, ()))
        for need in build.NEEDS.get(name, ()):
            found |= before(need)
        return found

    chapter_needs = {name: needs for name, needs in build.NEEDS.items() if name in names}
    for name, needs in chapter_needs.items():
        assert "01_marketplace" in before(name), name
        # a chapter waits on earlier chapters and on the build's jobs, never on a later chapter
        assert all(n < name or n in build.JOBS for n in needs), name
    # jobs wait on the world, the graph and each other only: a job that waited on a chapter which
    # waits on jobs could deadlock the build
    for name, job in build.JOBS.items():
        assert build.NEEDS[name] == job.needs and "01_marketplace" in before(name), name
        assert all(n in build.JOBS or n[:2] <= "04" for n in job.needs), name
    assert build.TIMEOUT == yaml.safe_load((ROOT / "book" / "_config.yml").read_text())["execute"]["timeout"]


#: Modules documented through their package's classes in book/api.md rather than by automodule.
DOCUMENTED_VIA_PACKAGE = {"retrieval_lib.marketplace.config", "retrieval_lib.marketplace.data"}


def test_api_page_documents_every_module():
    api = (ROOT / "book" / "api.md").read_text()
    lib = ROOT / "retrieval_lib"
    modules = {".".join(("retrieval_lib", *p.relative_to(lib).with_suffix("").parts)) for p in lib.rglob("*.py")
               if p.name != "__init__.py"}
    missing = sorted(m for m in modules - DOCUMENTED_VIA_PACKAGE if f"automodule:: {m}\n" not in api)
    assert not missing, f"book/api.md does not document {missing}"


#: A library file in the preface's table: {py:mod}`path <module>`, linked to its API documentation, or
#: `path` in code for a file that a future chapter will add.
PREFACE_FILE = re.compile(r"\{py:mod\}`([^`<]+?) <([\w.]+)>`|(?<!\})`([^`]+)`")


def test_preface_table_names_files_that_exist():
    preface = "\n".join(_markdown(ROOT / "notebooks" / "00_preface.ipynb"))
    api = (ROOT / "book" / "api.md").read_text()
    rows = [line for line in preface.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 10
    for row in rows:
        chapter = int(row.split("|")[1])
        named = PREFACE_FILE.findall(row.split("|")[-2])
        assert named, f"chapter {chapter} names no files"
        for shown, module, plain in named:
            name = shown or plain
            assert (ROOT / "retrieval_lib" / name).exists() or chapter >= 10, \
                f"chapter {chapter}: retrieval_lib/{name} does not exist"
            if not module:
                assert chapter >= 10, f"chapter {chapter}: link `{name}` to its API documentation with {{py:mod}}"
                continue
            own = ".".join(("retrieval_lib", *Path(name).with_suffix("").parts)).removesuffix(".__init__")
            package = own.rsplit(".", 1)[0]
            assert module == own or (own in DOCUMENTED_VIA_PACKAGE and module == package), \
                f"chapter {chapter}: {name} links to {module}"
            assert f"automodule:: {module}\n" in api, f"chapter {chapter}: book/api.md does not document {module}"


GLOSSARY = ROOT / "book" / "glossary.md"
#: A link to a glossary term: {term}`term` or {term}`shown text <term>`.
TERM_ROLE = re.compile(r"\{term\}`([^`]*)`")


def _glossary_terms() -> list[str]:
    """The terms of book/glossary.md: the unindented lines of its glossary directive."""
    body = re.search(r"```\{glossary\}\n(.*?)\n```", GLOSSARY.read_text(), re.S)
    assert body, "book/glossary.md has no {glossary} directive"
    return [line.strip() for line in body.group(1).splitlines() if line.strip() and not line.startswith((" ", ":"))]


def _term_target(role_text: str) -> str:
    explicit = re.fullmatch(r"(.*?)\s*<([^<>]+)>", role_text, re.S)
    return explicit.group(2) if explicit else role_text


def test_glossary_is_in_the_toc_and_every_term_is_linked():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    assert "book/glossary" in [c["file"] for part in toc["parts"] for c in part["chapters"]]
    terms = _glossary_terms()
    assert terms and len(set(terms)) == len(terms), "glossary terms must be unique"
    linked = {path.name: {_term_target(t) for source in _markdown(path) for t in TERM_ROLE.findall(source)}
              for path in NOTEBOOKS}
    from_chapters = set().union(*(linked[path.name] for path in CHAPTERS))
    unlinked = [term for term in terms if term not in from_chapters]
    assert not unlinked, f"glossary terms no chapter links to: {unlinked}"
    references = set().union(*linked.values()) | {_term_target(t) for t in TERM_ROLE.findall(GLOSSARY.read_text())}
    unknown = sorted(references - set(terms))
    assert not unknown, f"{{term}} links to terms the glossary lacks (Sphinx needs the exact term): {unknown}"
    for path in NOTEBOOKS:
        headings = [line for source in _markdown(path) for line in source.splitlines()
                    if line.startswith("#") and "{term}" in line]
        assert not headings, f"{path.name}: glossary links in headings: {headings}"


@pytest.fixture(scope="module")
def tiny_run_files(tmp_path_factory) -> list[Path]:
    """Every chapter run twice on the tiny preset, each with an empty cache, side by side (one thread each).

    The second run also runs every exercise's solution after its chapter; its log lies next to its figures.
    """
    tmp = tmp_path_factory.mktemp("tiny-runs")
    outs = [tmp / f"run{i}.json" for i in range(2)]
    procs = [chapters.start_run(CHAPTERS, out, tmp / f"cache{i}", solutions=i == 1) for i, out in enumerate(outs)]
    logs = [p.communicate()[0] for p in procs]
    for p, log, out in zip(procs, logs, outs, strict=True):
        out.with_suffix(".log").write_text(log)
        assert p.returncode == 0, f"a tiny run failed:\n{log[-3000:]}"
    return outs


@pytest.fixture(scope="module")
def tiny_runs(tiny_run_files) -> list[dict]:
    """The two tiny runs' figures (timings left out)."""
    return [results.deterministic(json.loads(out.read_text())) for out in tiny_run_files]


@pytest.mark.book
def test_same_seed_gives_identical_results(tiny_runs):
    """Same config, same seed, same thread count: identical recorded figures."""
    assert tiny_runs[0] and tiny_runs[0] == tiny_runs[1], "\n".join(chapters.differences(*tiny_runs))


@pytest.mark.book
def test_every_code_solution_runs_on_tiny(tiny_run_files):
    """The second tiny run executed each chapter's solution code after it, without an error."""
    log = tiny_run_files[1].with_suffix(".log").read_text()
    ran = {m[0]: int(m[1]) for m in re.findall(r"^(\S+\.ipynb): (\d+) solution cells$", log, re.M)}
    expected = {p.name: sum(len(e.code) for e in chapters.exercises(p)) for p in CHAPTERS}
    assert ran == expected
    assert sum(ran.values()) >= len(CHAPTERS), "most chapters have a code solution"


@pytest.mark.book
def test_the_builds_jobs_train_exactly_what_the_chapters_load(tiny_run_files):
    """Every job of ``retrieval_lib.prefetch`` finds its models already in a cache the chapters alone filled.

    ``make book`` trains these models in jobs beside the chapters, which then load them: a job whose
    call differed from its chapter's in any part of the cache key would train a model no chapter
    reads, and the chapter would train its own again.
    """
    from retrieval_lib.prefetch import JOBS

    cache = tiny_run_files[0].parent / "cache0"  # chapters only, no exercise solutions
    before = {p.name for p in cache.iterdir()}
    assert sum(p.startswith("unified-") for p in before) >= 10, sorted(before)
    run = subprocess.run([sys.executable, "-m", "retrieval_lib.prefetch", *JOBS], capture_output=True, text=True,
                         env={**os.environ, **chapters.SINGLE_THREAD, "RETRIEVAL_LIB_PRESET": "tiny",
                              "RETRIEVAL_LIB_CACHE": str(cache), "TQDM_DISABLE": "1"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert {p.name for p in cache.iterdir()} == before


@pytest.mark.book
def test_tiny_run_matches_the_committed_reference(tiny_runs):
    """The cross-machine canary: the pinned numerics give the reference's figures on this CPU too."""
    if not numerics.pinned():
        pytest.skip(f"this CPU has no AVX2 code paths to pin to ({numerics.describe()['torch.cpu_capability']})")
    expected, every = chapters.canary_figures()
    assert len(expected) > 300, "the reference lists too few figures to be a canary; regenerate it"
    changed = chapters.differences(expected, {key: tiny_runs[0].get(key) for key in expected})
    made_on = json.loads(chapters.REFERENCE.read_text())["made_on"]
    scope = "every figure" if every else "the figures that do not depend on MKL's code path (another CPU)"
    assert not changed, (
        f"{len(changed)} tiny figures differ from {chapters.REFERENCE.relative_to(ROOT)}, comparing {scope} "
        f"(made on {made_on}; this process: {numerics.describe()}).\nIf the change was intended, regenerate it "
        f"with `{chapters.REGENERATE}` and commit it; if not, the numeric code paths are not pinned on this "
        "machine.\n" + "\n".join(changed))


@pytest.mark.book
def test_prose_quotes_only_figures_glued_above_it(tiny_run_files):
    """The preface's promise: every number in the prose is computed by a code cell above it."""
    folder = chapters.glue_logs(tiny_run_files[0])
    late, checked = [], 0
    for path in CHAPTERS:
        glued = results.glue_log(folder / f"{path.stem}.tsv")
        checked += len(glued)
        late += chapters.glued_before_quoted(path, glued)
    assert checked > 300, f"only {checked} glued figures logged in {folder}"
    assert not late, "\n".join(late)


@pytest.mark.book
def test_book_builds_strictly_with_every_required_figure(built_book):
    html = ROOT / "book" / "_build" / "html"
    assert (html / "index.html").is_file()
    for path in NOTEBOOKS:
        page = html / "notebooks" / f"{path.stem}.html"
        assert page.is_file(), page
    api = (html / "book" / "api.html").read_text()
    assert "retrieval_lib.marketplace.generate" in api
    missing = [k for k in REQUIRED if k not in built_book]
    assert not missing, f"results.json lacks {missing}"


@pytest.mark.book
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_shows_its_figures(built_book, path):
    page = (ROOT / "book" / "_build" / "html" / "notebooks" / f"{path.stem}.html").read_text()
    n_plots = sum(c.source.count("plt.show()") for c in nbformat.read(path, as_version=4).cells
                  if c.cell_type == "code")
    assert page.count("<img") >= n_plots > 0, f"{path.name}: {n_plots} figures in the code, fewer in the page"


@pytest.mark.book
def test_glued_numbers_are_rendered(built_book):
    page = (ROOT / "book" / "_build" / "html" / "notebooks" / "02_semantic_gap.html").read_text()
    assert f"{built_book['bm25.recall@100.tail']:.3f}" in page


@pytest.mark.book
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_built_pages_show_no_progress_bars(built_book, path):
    page = (ROOT / "book" / "_build" / "html" / "notebooks" / f"{path.stem}.html").read_text()
    assert not re.search(r"\d+/\d+ \[\d\d:\d\d", page), f"{path.name} shows a tqdm progress bar"
