"""FHIR R4: blood-pressure Observations (``codes``, ``build``, ``parse``), the identities of
readings and published resources (``ids``), and the alerts bp-monitor publishes (``alerts``)."""
