"""Codes and systems of the FHIR vital-signs blood-pressure profile."""

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

BP_PANEL = "85354-9"        # Blood pressure panel with all children optional
SYSTOLIC = "8480-6"         # Systolic blood pressure
DIASTOLIC = "8462-4"        # Diastolic blood pressure
VITAL_SIGNS = "vital-signs"
MM_HG = "mm[Hg]"
KPA = "kPa"
MM_HG_PER_KPA = 7.50062     # 1 kPa in mmHg

VITAL_SIGNS_BP_PROFILE = "http://hl7.org/fhir/StructureDefinition/bp"
