"""Progress bars: drawn on a terminal, silent when disabled or on a log file, usable without tqdm."""

from __future__ import annotations

import io

import pytest

from daskmeans import progress


class Tty(io.StringIO):
    """A text stream that says it is a terminal, as stderr in an interactive shell does."""

    def isatty(self):
        return True


def test_a_terminal_sees_the_bar_with_its_counts_and_postfix():
    out = Tty()
    with progress.bar(5, "k-means", enabled=True, file=out) as p:
        for i in range(5):
            p.update(1, inertia=f"{100 - i:.4g}", changed=5 - i)
    text = out.getvalue()
    assert "k-means" in text and "5/5" in text and "100%" in text
    assert "inertia=96" in text and "changed=1" in text


def test_disabled_draws_nothing_anywhere():
    out = Tty()
    p = progress.bar(3, "ingest", enabled=False, file=out)
    p.update(2, x=1)
    p.close()
    p.close()  # idempotent
    assert out.getvalue() == ""


def test_a_stream_that_is_not_a_terminal_stays_clean():
    out = io.StringIO()  # a pipe or a log file: carriage-return redraws would fill it
    with progress.bar(3, "ingest", file=out) as p:
        p.update(3)
    assert out.getvalue() == ""


def test_plain_lines_without_tqdm(monkeypatch):
    monkeypatch.setattr(progress, "_tqdm", None)
    out = io.StringIO()
    with progress.bar(4, "k-means++", file=out) as p:
        p.update(1, centre=1)
        p.update(3, centre=4)
    lines = out.getvalue().splitlines()
    assert lines[0] == "k-means++: 1/4 centre=1"  # the first update is shown at once
    assert lines[-1] == "k-means++: 4/4 centre=4"  # and the final state on close
    assert progress.bar(None, "x", enabled=False).update(1) is None


def test_exceptions_still_close_the_bar():
    out = Tty()
    with pytest.raises(RuntimeError), progress.bar(10, "k-means", file=out) as p:
        p.update(2)
        raise RuntimeError("stop")
    assert p._impl is None and "2/10" in out.getvalue()
