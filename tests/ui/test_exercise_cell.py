"""An exercise cell as a student uses it, in JupyterLab in a real (headless) Chromium.

Notebook 01 (built from its source, served by the shared ``lab`` fixture of
tests/ui/conftest.py): the cells above the first exercise run, then the test types a wrong
``pair_masks`` into the exercise cell, runs it and its check cell with Shift+Enter, and reads
the checker's failure, the mistake named; then it types a right answer and reads the success.

Skipped, with the reason, when Chromium or Playwright is missing. Marked ``slow``.
"""

from __future__ import annotations

import pytest

from ui.lab import CURRENT, open_notebook, screenshot_on_failure

pytestmark = pytest.mark.slow

NOTEBOOK = "01_contrastive_and_triplet"
CHECK_S = 90         # the longest the cells above and one check may take
WRONG = """def pair_masks(labels):
    same = labels[:, None] == labels[None, :]
    return same, ~same
"""
RIGHT = """def pair_masks(labels):
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    return same & ~eye, ~same
"""
_INDEX = f"""(needle) => {CURRENT}.content.widgets.findIndex(
    c => c.model.type === 'code' && c.model.sharedModel.getSource().includes(needle))"""
_IDLE_AFTER = f"""(index) => {{
    const w = {CURRENT};
    const k = w.sessionContext.session && w.sessionContext.session.kernel;
    const c = w.content.widgets[index];
    return !!k && k.status === 'idle' && c.model.executionCount !== null
        && c.node.querySelector('.jp-InputPrompt').innerText.trim() !== '[*]:';
}}"""
_ABOVE_RUN = f"""(index) => {{
    const w = {CURRENT};
    const k = w.sessionContext.session && w.sessionContext.session.kernel;
    const above = w.content.widgets.slice(0, index).filter(c => c.model.type === 'code');
    return !!k && k.status === 'idle' && above.every(c => c.model.executionCount !== null)
        && !document.body.innerText.includes('[*]:');
}}"""


def _type_answer(page, cell, code: str) -> None:
    """Replace the exercise cell's text by ``code``, as typed into its editor (a paste-like
    input, so that the editor's auto-indentation does not indent the lines twice)."""
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(code)


def _run_answer_and_check(page, cell, check, index: int, was: int | None) -> str:
    """Shift+Enter in the exercise cell (runs it, moves to the check cell), Shift+Enter again
    (runs the check); returns the check cell's output once its execution count moved on."""
    cell.locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        f"""([index, was]) => ({_IDLE_AFTER})(index)
            && {CURRENT}.content.widgets[index].model.executionCount !== was""",
        arg=[index, was], timeout=CHECK_S * 1000, polling=250)
    return check.locator(".jp-OutputArea-output").inner_text()


def test_a_wrong_then_a_right_answer_in_an_exercise_cell(lab):
    page, base, token, _ = lab
    with screenshot_on_failure(page, "exercise_cell"):
        open_notebook(page, base, token, NOTEBOOK)
        index = page.evaluate(_INDEX, "def pair_masks(labels):")
        check_index = page.evaluate(_INDEX, 'exercises.check("pair_masks"')
        assert 0 < index < check_index
        cells = page.locator(".jp-Notebook .jp-Cell")
        cell, check = cells.nth(index), cells.nth(check_index)
        # the cells above the exercise (parameters, imports, a figure), as a student runs them
        cell.click()
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-above')")
        page.wait_for_function(_ABOVE_RUN, arg=index, timeout=CHECK_S * 1000, polling=250)

        _type_answer(page, cell, WRONG)
        assert "same, ~same" in page.evaluate(
            f"(i) => {CURRENT}.content.widgets[i].model.sharedModel.getSource()", index)
        text = _run_answer_and_check(page, cell, check, check_index, None)
        assert "✗ pair_masks" in text, text
        assert "Looks like: the diagonal is counted as a positive pair" in text, text
        assert "Traceback" not in text

        was = page.evaluate(f"(i) => {CURRENT}.content.widgets[i].model.executionCount",
                            check_index)
        _type_answer(page, cell, RIGHT)
        text = _run_answer_and_check(page, cell, check, check_index, was)
        assert text.strip().startswith("✓ pair_masks: correct on all"), text
        assert "Looks like" not in text
