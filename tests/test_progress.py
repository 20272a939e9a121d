"""Progress of long steps (model/progress.py) and where it is reported."""

import logging
import time

import numpy as np

from model import progress, visualize


def test_a_quick_step_prints_nothing(caplog, capsys):
    with caplog.at_level(logging.INFO):
        with progress.step("Embedding 5 batches", 5) as bar:
            bar.update(5)
    assert caplog.records == [] and capsys.readouterr().out == ""


def test_a_failing_step_prints_no_end_line(monkeypatch, caplog):
    monkeypatch.setattr(progress, "QUIET_SECONDS", 0)
    with caplog.at_level(logging.INFO):
        try:
            with progress.step("Scanning", 3):
                raise ValueError("bad folder")
        except ValueError:
            pass
    assert [r.getMessage() for r in caplog.records] == ["Scanning ..."]


def test_a_slow_step_in_a_log_gets_a_start_and_an_end_line_and_no_bar(monkeypatch, caplog,
                                                                     capsys):
    monkeypatch.setattr(progress, "QUIET_SECONDS", 0.05)
    with caplog.at_level(logging.INFO):
        with progress.step("Embedding 5 batches", 5) as bar:
            for done in range(1, 6):
                time.sleep(0.02)
                bar.update(done)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "Embedding 5 batches ..."
    assert lines[1].startswith("Embedding 5 batches: done in ") and lines[1].endswith(" s")
    assert capsys.readouterr().out == ""  # pytest's stdout is not a terminal


def test_a_terminal_gets_keras_progress_bar(monkeypatch, capsys):
    monkeypatch.setattr(progress, "QUIET_SECONDS", 0)
    monkeypatch.setattr(progress, "interactive", lambda: True)
    with progress.step("Checking 4 images", 4) as bar:
        bar.update(2)
        bar.update(4)
    assert "4/4" in capsys.readouterr().out


def test_tsne_reports_its_iterations(monkeypatch, caplog):
    updates = []

    real_update = progress._Reporter.update
    monkeypatch.setattr(progress._Reporter, "update",
                        lambda self, done: updates.append(done) or real_update(self, done))
    monkeypatch.setattr(progress, "QUIET_SECONDS", 0)
    with caplog.at_level(logging.INFO):
        visualize.tsne_2d(np.random.default_rng(0).normal(size=(60, 4)))
    assert updates == list(range(50, 751, 50))
    assert [r.getMessage() for r in caplog.records][0] == "t-SNE of 60 embeddings ..."
