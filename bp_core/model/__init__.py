"""The model lifecycle: training tracked in MLflow, promotion by alias, serving.

- ``training``   fit the classifier, log the run, register the version as 'challenger'
- ``metrics``    the figures every comparison uses (pure)
- ``registry``   one small MLflow registry helper per lifecycle step
- ``registry_lock``  mutual exclusion of promotions and rollbacks, in the registry
- ``gate``       the promotion gate's rules: pure comparisons (hold-out, live evidence)
- ``decision``   a promotion decision, its record (version tags) and its table
- ``promotion``  promote (the gate), promote a version (operator), rollback
- ``shadow``     live evidence about the challenger: accumulate, publish, read back
- ``serving``    ``ModelProvider``: the champion (or another alias) for the consumer

Submodules import MLflow and scikit-learn lazily where they can: importing this
package is cheap.
"""
