"""The chapter runner's exercise parser: numbered items, collapsed hints and solutions, and solution code."""

import nbformat

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
