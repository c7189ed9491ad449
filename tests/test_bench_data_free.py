"""The data-free benchmark's arithmetic: the issue-19 table (its chance mAP: tests/eval/test_eval_chance.py)."""

from __future__ import annotations

from bench_scripts import load_benchmark


def test_paired_table_pairs_seeds_and_counts_seeds_above_chance():
    bench = load_benchmark("bench_data_free")
    diag = {"synthesis/agreement": 0.5, "synthesis/agreement_chance": 0.1, "synthesis/balance": 1.0,
            "synthesis/probe_photo": 0.7, "synthesis/probe_sketch": 0.9, "reference/map": 0.6}
    rows = [{"method": "classifier only (probabilities)", "seed": 0, "best": {"map": 0.5, "p@200": 0.6},
             "train_seconds": 1.0},
            {"method": "student", "seed": 1, "best": {"map": 0.1, "p@200": 0.2}, "last": {"map": 0.4, "p@200": 0.3},
             "diagnostics": diag, "train_seconds": 30.0},
            {"method": "student", "seed": 0, "best": {"map": 0.2, "p@200": 0.2}, "last": {"map": 0.12, "p@200": 0.1},
             "diagnostics": diag, "train_seconds": 10.0}]
    table = bench._paired_table(rows, "classifier only (probabilities)", chance=0.1).splitlines()
    assert table[2] == ("| classifier only (probabilities) | training-free | 0.500 | 0.500 | - | 0.600 | - | 0.400 | "
                        "- (-) | - | - / - | - | 1 |")
    # seeds in order, the last checkpoint where recorded, paired with the training-free row; one seed
    # (0.4) more than 0.03 above chance, the other (0.12) not
    assert table[3] == ("| student | 0,1 | 0.120, 0.400 | 0.260 ± 0.198 | 0.150 ± 0.071 | 0.200 ± 0.141 | "
                        "-0.240 ± 0.198 (0/2 > 0) | 0.160 ± 0.198 (1/2 > 0.03) | 0.50 (0.10) | 1.00 | 0.70 / 0.90 | "
                        "0.60 | 20 |")
