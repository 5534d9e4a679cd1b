"""The chapter runner: the exercise parser (numbered items, collapsed hints and solutions, solution code) and
the scheduler that runs the book's chapters two at a time."""

import threading
import time

import nbformat
import pytest

from retrieval_lib.infra import chapters

EXERCISES = """## Exercises

1. Change `k1`. Which numbers move?

:::{dropdown} Hint
Look at the length normalisation.
:::

:::{dropdown} Solution
Run it:

```python
x = 1 + 1
print(x)
```

Then compare:

```python
y = x * 2
```
:::

2. Argue without code.

:::{dropdown} Hint
Think.
:::

:::{dropdown} Solution
Because.
:::
"""


def _notebook(*markdown: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("a = 1")] + [nbformat.v4.new_markdown_cell(m) for m in markdown]
    return nb


def test_exercises_parse_hints_solutions_and_code():
    found = chapters.exercises(_notebook("# Title\n\n## Summary\n\n* point", EXERCISES))
    assert [e.number for e in found] == [1, 2]
    first, second = found
    assert first.text == "Change `k1`. Which numbers move?"
    assert first.hint == "Look at the length normalisation."
    assert first.code == ["x = 1 + 1\nprint(x)\n", "y = x * 2\n"]
    assert second.solution == "Because." and second.code == []


def test_a_missing_dropdown_reads_as_empty():
    found = chapters.exercises(_notebook("## Exercises\n\n1. No help here.\n\n2. Nor here."))
    assert [(e.number, e.text, e.hint, e.solution) for e in found] == [(1, "No help here.", "", ""),
                                                                     (2, "Nor here.", "", "")]
    assert chapters.exercises(_notebook("## Summary\n\n1. not an exercise")) == []


def test_exercises_end_at_the_next_section():
    found = chapters.exercises(_notebook(EXERCISES + "\n## Further reading\n\n3. Not an exercise."))
    assert [e.number for e in found] == [1, 2]


def test_with_solutions_appends_tagged_code_cells_and_leaves_the_original():
    nb = _notebook(EXERCISES)
    extended, added = chapters.with_solutions(nb)
    assert added == 2 and len(extended.cells) == len(nb.cells) + 2
    assert [c.source for c in extended.cells[-2:]] == ["x = 1 + 1\nprint(x)\n", "y = x * 2\n"]
    assert all(c.metadata["tags"] == ["solution"] for c in extended.cells[-2:])
    assert len(nb.cells) == 2


def _scheduled(names, needs, durations=None, fail=(), **kwargs):
    """Run chapters.run_scheduled with workers that sleep; return (finish order, event log, peak concurrency)."""
    log, lock, running, peak = [], threading.Lock(), set(), [0]

    def work(name):
        with lock:
            running.add(name)
            peak[0] = max(peak[0], len(running))
            log.append(("start", name, frozenset(running)))
        time.sleep((durations or {}).get(name, 0.02))
        with lock:
            running.discard(name)
            log.append(("end", name, frozenset(running)))
        if name in fail:
            return "it broke"
        return None

    return chapters.run_scheduled(names, work, needs, **kwargs), log, peak[0]


def test_scheduled_chapters_start_after_what_they_need():
    needs = {"b": ("a",), "c": ("a",), "d": ("b", "c")}
    done, log, peak = _scheduled(["a", "b", "c", "d"], needs, slots=2)
    assert sorted(done) == ["a", "b", "c", "d"] and done[0] == "a" and done[-1] == "d"
    order = [(kind, name) for kind, name, _ in log]
    for name, wanted in needs.items():
        for need in wanted:
            assert order.index(("end", need)) < order.index(("start", name))
    assert peak == 2  # b and c ran side by side


def test_scheduled_chapters_never_exceed_the_slots_and_alone_runs_alone():
    names = ["a", "b", "c", "d", "e"]
    _, log, peak = _scheduled(names, {}, slots=2, alone=("c",))
    assert peak <= 2
    start_c = next(i for i, (kind, name, _) in enumerate(log) if (kind, name) == ("start", "c"))
    assert log[start_c][2] == {"c"}  # nothing else was running when c started
    end_c = next(i for i, (kind, name, _) in enumerate(log) if (kind, name) == ("end", "c"))
    assert all(kind == "end" or name == "c" for kind, name, _ in log[start_c:end_c])  # nothing started beside it
    _, _, one = _scheduled(names, {}, slots=1)
    assert one == 1


def test_scheduled_chapters_put_the_first_ones_first():
    done, log, _ = _scheduled(["a", "b", "c"], {}, slots=1, first=("c",))
    assert done == ["c", "a", "b"]


def test_a_failed_chapter_stops_what_needs_it_and_is_named():
    with pytest.raises(RuntimeError, match="b failed: it broke"):
        _scheduled(["a", "b", "c"], {"c": ("b",)}, slots=1, fail=("b",))
    # the chapter running beside the failure finishes; nothing new starts after it
    seen = []

    def work(name):
        seen.append(name)
        if name == "a":
            raise OSError("kernel died")
        return None

    with pytest.raises(RuntimeError, match="a failed: OSError: kernel died"):
        chapters.run_scheduled(["a", "b", "c"], work, {"b": ("a",)}, slots=1)
    assert seen == ["a"]


def test_chapters_that_wait_on_each_other_are_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match="wait on each other"):
        _scheduled(["a", "b"], {"a": ("b",), "b": ("a",)})
    with pytest.raises(ValueError, match="slots"):
        _scheduled(["a"], {}, slots=0)


def test_needs_outside_the_run_are_ignored():
    done, _, _ = _scheduled(["b"], {"b": ("a",)})  # a tiny run of one chapter
    assert done == ["b"]
