"""Evaluation and robustness (specification step 16): COCO metrics by slice, robustness, OOD,
calibration, drift, quantization sensitivity and the regression gates. No Dagster here."""
