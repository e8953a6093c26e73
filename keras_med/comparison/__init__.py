"""`keras-med compare`: is run B better than run A on the test images they share?

- `keras_med.comparison.runs`: a run directory's test predictions, and the pairing of runs on
  the test images they share.
- `keras_med.comparison.statistics`: paired group bootstrap of metric differences, McNemar's
  test, DeLong's test for two correlated AUCs, and the seed-group bootstrap.
- `keras_med.comparison.report`: the console table, `comparison.md`/`.html` (with a forest plot)
  and `comparison.json`.
- `keras_med.comparison.command`: the `keras-med compare` flags.
"""
