"""bp-monitor: real-time blood-pressure surveillance on FHIR data.

Modules (pure logic first, I/O at the edges):

- ``settings``      the one settings object, read from the environment
- ``errors``        the product's exception tree
- ``reading``       the typed blood-pressure reading every layer passes around
- ``fhir``          building and parsing FHIR R4 blood-pressure Observations
- ``rules``         clinical thresholds and AHA categories
- ``cohort``        the synthetic cohort simulator (labelled, deterministic by seed)
- ``features``      the model's features: one definition for training and serving
- ``model``         training, registry, promotion and serving of the classifier
- ``producer``      streaming Observations into Kafka
- ``consumer``      the long-running consumer: validate, score, route, commit
- ``sinks``         Elasticsearch, archive and dead-letter sinks
- ``commands``      the ``bp`` command-line interface, one module per sub-command
"""

__version__ = "0.1.0"
