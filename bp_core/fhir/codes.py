"""Codes and systems: the FHIR vital-signs blood-pressure profile, and those of bp-monitor's alerts."""

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

BP_PANEL = "85354-9"        # Blood pressure panel with all children optional
SYSTOLIC = "8480-6"         # Systolic blood pressure
DIASTOLIC = "8462-4"        # Diastolic blood pressure
VITAL_SIGNS = "vital-signs"
MM_HG = "mm[Hg]"
KPA = "kPa"
MM_HG_PER_KPA = 7.50062     # 1 kPa in mmHg

VITAL_SIGNS_BP_PROFILE = "http://hl7.org/fhir/StructureDefinition/bp"

# Observation.status (http://hl7.org/fhir/observation-status)
ENTERED_IN_ERROR = "entered-in-error"   # retracts the earlier Observation with the same identity
AMENDED = "amended"                     # amended and corrected replace it
CORRECTED = "corrected"

# --------------------------------------------------------------------------- alerts out

# HL7 code systems
RISK_PROBABILITY = "http://terminology.hl7.org/CodeSystem/risk-probability"  # negligible|low|moderate|high|certain
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"

# SNOMED CT concepts
RISK_ASSESSMENT = "225338004"           # Risk assessment (procedure): RiskAssessment.code
SOFTWARE = "706689003"                  # Application program software (physical object): Device.type
INCREASED_BLOOD_PRESSURE = "24184005"   # Finding of increased blood pressure (finding): the Flag's code

# bp-monitor's own code systems (URNs in the namespace of the Patient identifier system,
# urn:bp-monitor:patient); docs/fhir-output.md lists their codes.
ANOMALY_TYPE_SYSTEM = "urn:bp-monitor:anomaly-type"          # RiskAssessment.prediction.outcome
DETECTION_METHOD_SYSTEM = "urn:bp-monitor:detection-method"  # RiskAssessment.method: rules|model|rules+model
PATIENT_STATUS_SYSTEM = "urn:bp-monitor:patient-status"      # Flag.code: sustained_hypertension
OBSERVATION_ID_SYSTEM = "urn:bp-monitor:observation-id"      # logical reference to an Observation
                                                             # whose id is not a FHIR id

ANOMALY = "anomaly"                     # the reading-level outcome: an anomalous reading
SUSTAINED_HYPERTENSION = "sustained_hypertension"

ANOMALY_TYPE_DISPLAYS = {
    ANOMALY: "Anomalous blood-pressure reading",
    "systolic_high": "Systolic above the high threshold",
    "systolic_low": "Systolic below the low threshold",
    "diastolic_high": "Diastolic above the high threshold",
    "diastolic_low": "Diastolic below the low threshold",
    "rise_from_baseline": "Rise from the patient's baseline",
    "drop_from_baseline": "Drop from the patient's baseline",
}
