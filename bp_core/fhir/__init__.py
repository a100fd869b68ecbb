"""FHIR R4 blood-pressure Observations: codes, building (``build``), parsing (``parse``)."""
