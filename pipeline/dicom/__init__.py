"""DICOM files: discovery under dicom.source, validation, de-identification, ingest workers."""
