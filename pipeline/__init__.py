"""I/O around the algorithm: DICOM ingestion, de-identification, clinical source, ONNX, reports."""
