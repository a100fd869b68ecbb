"""The long-running consumer: ``routing`` (pure scoring and routing of a batch),
``service`` (Kafka poll -> sinks -> commit loop), ``metrics`` (Prometheus)."""
