"""Synthetic data with a known causal graph: the one DICOM writer and the demo cohort."""
