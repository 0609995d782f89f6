"""The classifier benchmark: the default LinearTextClassifier against TF-IDF + LinearSVC.

Both fit the same training split of >= 30,000 labelled texts and are scored
on the same held-out split; each fit runs in a fresh interpreter (so peak RSS
is its own) and the two alternate. The ratio is the median over repeats of
the ratio of a repeat's two fit times (wall clock; the CPU-time ratio is
printed too); times, accuracy and memory are medians.
The texts are the noisy generated tickets of :mod:`bench.classifier_data`, or
any JSONL of ``text``/``label`` lines given with ``--classifier-data``.

Target: the default fits in at most 2x the baseline's time, at the same
accuracy or better (within half a point), with at most 2x its peak memory.
"""

from __future__ import annotations

import random
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["FIT_RATIO_TARGET", "bench_classifier", "run_classifier_child"]

FIT_RATIO_TARGET = 2.0
ACCURACY_SLACK = 0.005
RSS_RATIO_TARGET = 2.0
GENERATED = 40_000
HELD_OUT = 0.2


def _split(data: str | None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    if data:
        from operators.models.offline import load_labelled_examples

        rows = load_labelled_examples(data)
    else:
        from bench.classifier_data import noisy_tickets

        rows = noisy_tickets(GENERATED, seed=11)
    random.Random(5).shuffle(rows)
    cut = int(len(rows) * (1 - HELD_OUT))
    return rows[:cut], rows[cut:]


def _baseline() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LinearSVC())


def run_classifier_child(variant: str, data: str | None) -> dict[str, Any]:
    """Fit one variant on the training split; return fit seconds, accuracy and peak RSS.

    Args:
        variant: ``default`` (LinearTextClassifier) or ``baseline`` (TF-IDF + LinearSVC).
        data: a JSONL of labelled texts, or None for the generated tickets.

    Returns:
        ``fit_s`` (wall), ``cpu_s``, ``accuracy``, ``train``, ``test``, ``labels``
        and ``rss_mb``.
    """
    train, test = _split(data)
    texts, labels = [t for t, _ in train], [label for _, label in train]
    test_texts = [t for t, _ in test]
    predict: Callable[[list[str]], list[str]]
    if variant == "baseline":
        model = _baseline()
        started, cpu = time.perf_counter(), time.process_time()
        model.fit(texts, labels)
        fit_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu

        def predict(batch: list[str]) -> list[str]:
            return [str(label) for label in model.predict(batch)]
    else:
        from operators.models.offline import LinearTextClassifier

        classifier = LinearTextClassifier()
        started, cpu = time.perf_counter(), time.process_time()
        classifier.fit(train)
        fit_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu

        def predict(batch: list[str]) -> list[str]:
            return [found.label for found in classifier.predict(batch)]

    predicted = predict(test_texts)
    correct = sum(p == t for p, (_, t) in zip(predicted, test, strict=True))
    return {
        "fit_s": fit_s,
        "cpu_s": cpu_s,
        "accuracy": correct / len(test),
        "train": len(train),
        "test": len(test),
        "labels": len(set(labels)),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def bench_classifier(
    repeats: int, data: str | None, measure: Callable[[str, str], dict[str, Any]]
) -> str:
    """Alternate the default and the baseline ``repeats`` times; return the BENCH line.

    Args:
        repeats: fits of each.
        data: a JSONL of labelled texts, or None for the generated tickets.
        measure: runs ``(kind, data)`` in a fresh interpreter and returns its RESULT.
    """
    runs: dict[str, list[dict[str, Any]]] = {"default": [], "baseline": []}
    for i in range(repeats):
        order = ("default", "baseline") if i % 2 == 0 else ("baseline", "default")
        for variant in order:
            result = measure(f"classifier-{variant}", data or "")
            runs[variant].append(result)
            print(
                f"  classifier run {i} {variant:<8} fit_s={result['fit_s']:6.2f} "
                f"cpu_s={result['cpu_s']:6.2f} "
                f"accuracy={result['accuracy']:.4f} rss_mb={result['rss_mb']:6.0f} "
                f"train={result['train']} test={result['test']} labels={result['labels']}",
                flush=True,
            )

    def median(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[variant])

    fit, base_fit = median("default", "fit_s"), median("baseline", "fit_s")
    accuracy, base_accuracy = median("default", "accuracy"), median("baseline", "accuracy")
    rss, base_rss = median("default", "rss_mb"), median("baseline", "rss_mb")
    # The two fits of a repeat ran back to back, under the same load from the rest of
    # the machine: the median of their ratios is steadier than a ratio of medians.
    pairs = list(zip(runs["default"], runs["baseline"], strict=True))
    ratio = statistics.median(d["fit_s"] / b["fit_s"] for d, b in pairs)
    cpu_ratio = statistics.median(d["cpu_s"] / b["cpu_s"] for d, b in pairs)
    passed = (
        ratio <= FIT_RATIO_TARGET
        and accuracy >= base_accuracy - ACCURACY_SLACK
        and rss <= RSS_RATIO_TARGET * base_rss
    )
    source = data or f"generated:{GENERATED}"
    texts = runs["default"][0]["train"] + runs["default"][0]["test"]
    return (
        f"BENCH classifier fit_ratio={ratio:.2f} cpu_ratio={cpu_ratio:.2f} "
        f"fit_s={fit:.2f} accuracy={accuracy:.4f} "
        f"rss_mb={rss:.0f} base_fit_s={base_fit:.2f} base_accuracy={base_accuracy:.4f} "
        f"base_rss_mb={base_rss:.0f} texts={texts} "
        f"data={source} target: fit_ratio<={FIT_RATIO_TARGET} "
        f"accuracy>=base-{ACCURACY_SLACK} rss<={RSS_RATIO_TARGET}x "
        f"{'PASS' if passed else 'FAIL'}"
    )
