"""The same / different threshold (tftriplet/verification.py) against a brute force."""

import numpy as np
import pytest

from tftriplet import verification


def brute_force_threshold(distances, same):
    """Best accuracy of "same iff d <= t" over every candidate t (each distance and below all)."""
    candidates = np.concatenate([[distances.min() - 1], distances])
    return max(np.mean((distances <= t) == same) for t in candidates)


@pytest.mark.parametrize("seed", range(5))
def test_best_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    same = rng.random(60) < 0.5
    distances = np.where(same, rng.normal(1.0, 0.5, 60), rng.normal(2.0, 0.5, 60))
    threshold, accuracy = verification.best_threshold(distances, same)
    assert accuracy == pytest.approx(brute_force_threshold(distances, same))
    assert np.mean((distances <= threshold) == same) == pytest.approx(accuracy)


def test_best_threshold_separable_and_hand_checked():
    threshold, accuracy = verification.best_threshold(np.array([0.1, 0.2, 0.9, 1.0]),
                                                np.array([True, True, False, False]))
    assert (threshold, accuracy) == (pytest.approx(0.55), 1.0)
    threshold, accuracy = verification.best_threshold(np.array([0.1, 0.2]), np.array([False, False]))
    assert accuracy == 1.0 and threshold < 0.1


def test_pair_distances_are_labelled_right():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 5)
    embeddings = rng.normal(size=(20, 3)).astype(np.float32)
    distances, same = verification.pair_distances(embeddings, labels, 50, rng)
    assert same.sum() == 50 and (~same).sum() == 50
    with pytest.raises(verification.CalibrationError, match="two classes"):
        verification.pair_distances(embeddings, np.zeros(20), 5, rng)


def test_calibrate_verification_on_separated_classes():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(5), 40)
    embeddings = labels[:, None] * 10.0 + rng.normal(size=(200, 3))
    record = verification.calibrate_verification(embeddings, labels, num_pairs=500, seed=2)
    assert record["held_out_accuracy"] == 1.0 and record["calibration_accuracy"] == 1.0
    assert record["pairs_per_half"] == 1000
    assert record == verification.calibrate_verification(embeddings, labels, num_pairs=500, seed=2)


def test_check_calibration_refuses_labels_that_cannot_give_pairs():
    verification.check_calibration(np.repeat(np.arange(4), 6))
    for labels in (np.zeros(20), np.arange(20)):
        with pytest.raises(verification.CalibrationError, match="two classes"):
            verification.check_calibration(labels)


def test_the_names_published_in_metrics_by_1_0_0_still_import_from_there():
    from tftriplet import metrics, verification

    assert metrics.calibrate_verification is verification.calibrate_verification
    assert metrics.check_calibration is verification.check_calibration
    assert metrics.CalibrationError is verification.CalibrationError


def test_wide_embeddings_are_compared_in_blocks_with_the_same_distances(monkeypatch):
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(4), 6)
    embeddings = rng.normal(size=(24, 7)).astype(np.float32)
    whole = verification.pair_distances(embeddings, labels, 30, np.random.default_rng(1))
    monkeypatch.setattr(verification, "_BLOCK_ELEMENTS", 20)  # blocks of 2 pairs
    blocked = verification.pair_distances(embeddings, labels, 30, np.random.default_rng(1))
    np.testing.assert_array_equal(whole[0], blocked[0])
    np.testing.assert_array_equal(whole[1], blocked[1])


def test_calibration_of_65536_dimensions_stays_small():
    import subprocess
    import sys

    # VmHWM, the peak since the program started (getrusage's ru_maxrss also counts the
    # test suite's memory, shared by the fork before the exec).
    code = ("import numpy as np; from tftriplet import verification as v;"
            "peak = lambda: next(int(line.split()[1]) for line in open('/proc/self/status')"
            " if line.startswith('VmHWM:'));"
            "e = np.random.default_rng(0).normal(size=(400, 65536)).astype(np.float32);"
            "before = peak();"
            "v.calibrate_verification(e, np.arange(400) % 10, num_pairs=20000);"
            "print(peak() - before)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    # What calibration adds to the peak (TensorFlow and the 0.1 GB embeddings are there
    # before): all pair differences at once took 21 GB.
    added_gb = int(result.stdout.split()[-1]) / 2**20
    assert added_gb < 0.5, added_gb


def test_the_accuracy_interval_is_an_image_bootstrap():
    rng = np.random.default_rng(0)
    num_images = 30
    pairs = rng.integers(num_images, size=(2000, 2))
    # Images 0-9 are hard: their pairs are mostly wrong.
    correct = np.where(pairs.min(axis=1) < 10, rng.random(2000) < 0.4, rng.random(2000) < 0.95)
    low, high = verification.accuracy_interval(pairs, correct, num_images,
                                               np.random.default_rng(1), resamples=2000)
    # An independent loop: draw the images, count each pair as often as both are drawn.
    loop_rng = np.random.default_rng(2)
    estimates = []
    for _ in range(2000):
        drawn = np.bincount(loop_rng.choice(num_images, num_images), minlength=num_images)
        weight = np.array([drawn[a] * drawn[b] for a, b in pairs], np.float64)
        estimates.append((weight * correct).sum() / weight.sum())
    assert (low, high) == pytest.approx(tuple(np.percentile(estimates, [2.5, 97.5])), abs=0.015)
    assert low < correct.mean() < high
    # The pairs' count alone would give a far narrower (wrong) binomial interval.
    assert high - low > 3 * 2 * 1.96 * np.sqrt(correct.mean() * (1 - correct.mean()) / 2000)
    all_right = verification.accuracy_interval(pairs, np.ones(2000, bool), num_images,
                                               np.random.default_rng(1))
    assert all_right == (1.0, 1.0)


def test_few_images_give_a_wide_interval_and_many_a_narrow_one():
    def width(count):
        rng = np.random.default_rng(4)
        labels = np.arange(count) % 4
        embeddings = labels[:, None] + rng.normal(scale=0.6, size=(count, 2))
        record = verification.calibrate_verification(embeddings, labels, num_pairs=2000)
        low, high = record["held_out_accuracy_interval"]
        assert low <= record["held_out_accuracy"] <= high
        assert record["held_out_images"] == count // 2
        return high - low

    assert width(40) > 4 * width(4000)
