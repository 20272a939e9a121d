"""Progress of long steps (model/progress.py) and where it is reported."""

import logging

import numpy as np

from model import progress, visualize


def test_a_log_gets_a_start_and_an_end_line_and_no_bar(caplog, capsys):
    with caplog.at_level(logging.INFO):
        with progress.step("Embedding 5 batches", 5) as bar:
            for done in range(1, 6):
                bar.update(done)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "Embedding 5 batches ..."
    assert lines[1].startswith("Embedding 5 batches: done in ") and lines[1].endswith(" s")
    assert capsys.readouterr().out == ""  # pytest's stdout is not a terminal


def test_a_terminal_gets_keras_progress_bar(monkeypatch, capsys):
    monkeypatch.setattr(progress, "interactive", lambda: True)
    with progress.step("Checking 4 images", 4) as bar:
        bar.update(2)
        bar.update(4)
    assert "4/4" in capsys.readouterr().out


def test_tsne_reports_its_iterations(monkeypatch, caplog):
    updates = []

    class Recorder:
        def update(self, done):
            updates.append(done)

    monkeypatch.setattr(progress, "interactive", lambda: True)
    monkeypatch.setattr(progress, "_Bar", lambda total: Recorder())
    with caplog.at_level(logging.INFO):
        visualize.tsne_2d(np.random.default_rng(0).normal(size=(60, 4)))
    assert updates == list(range(50, 751, 50))
    assert [r.getMessage() for r in caplog.records][0] == "t-SNE of 60 embeddings ..."
