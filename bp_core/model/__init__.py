"""The model lifecycle: training tracked in MLflow, promotion by alias, serving.

- ``training``   fit the classifier, log the run, register the version as 'challenger'
- ``metrics``    the figures every comparison uses (pure)
- ``registry``   one small MLflow registry helper per lifecycle step
- ``promotion``  champion/challenger gate and rollback
- ``serving``    ``ModelProvider``: the champion for the consumer, refreshed by alias

Submodules import MLflow and scikit-learn lazily where they can: importing this
package is cheap.
"""
