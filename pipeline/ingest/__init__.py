"""Ingestion: scan dicom.source into the catalog, the quarantine and the array cache."""
