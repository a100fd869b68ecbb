"""The simulated world: a cohort of patients, labelled data sets, and the stream into Kafka."""
