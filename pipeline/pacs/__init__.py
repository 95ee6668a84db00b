"""PACS sources for ingest: DICOMweb (QIDO-RS, WADO-RS) and DIMSE (C-FIND, C-GET)."""
