"""The ``bp`` sub-commands, one module each (see ``bp_core.cli``)."""
