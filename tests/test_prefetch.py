"""The build's jobs (``retrieval_lib.prefetch``): their command line and their dependency graph.

That each job trains exactly the models its chapters load (the same cache keys) is checked on the
tiny preset in ``tests/test_book.py``, after the chapters have filled a cache of their own.
"""

import pytest

from retrieval_lib import prefetch


def test_list_names_every_job_and_what_it_needs(capsys):
    assert prefetch.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == list(prefetch.JOBS)
    assert "doc2query: needs 01_marketplace" in lines


@pytest.mark.parametrize("argv", [[], ["no_such_job"], ["doc2query", "no_such_job"]])
def test_unknown_or_missing_job_names_are_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        prefetch.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert ("no_such_job" in err and "doc2query" in err) if argv else "at least one job" in err


def test_jobs_form_a_graph_without_cycles_rooted_at_the_world():
    done = {"01_marketplace", "03_graph_embeddings"}  # the chapters jobs may wait on
    left = dict(prefetch.JOBS)
    while left:
        ready = [name for name, job in left.items() if set(job.needs) <= done]
        assert ready, f"jobs wait on each other or on unknown steps: { {n: j.needs for n, j in left.items()} }"
        for name in ready:
            done.add(name)
            del left[name]
    assert all("01_marketplace" in job.needs for job in prefetch.JOBS.values())


def test_every_trained_model_of_chapters_5_to_10_has_a_job():
    """The five ablations, the four negative recipes, two more losses, the block, and the system."""
    assert set(prefetch.ABLATED) == {"graph", "term", "transformer", "history", "location"}
    assert {"doc2query", "sentence_vectors", "unified", "uniform", "mined", "losses", "pretrained_block",
            "system"} <= set(prefetch.JOBS)
