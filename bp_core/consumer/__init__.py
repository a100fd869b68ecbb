"""The long-running consumer (``bp consume``), made of named parts: ``batch`` (parse, score
and route one batch, no I/O), ``documents`` (what the sinks store), ``writer`` (make a
batch durable in every sink), ``checkpoint`` (commit offsets after the sinks), ``idle``
(when ``--exit-when-idle`` may stop), ``stats`` and ``metrics`` (counting), and ``service``
(the loop that ties them)."""
