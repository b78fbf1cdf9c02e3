"""The bottom layer: errors, durable storage, option validation, parsing, progress bars, measurement.

Nothing here knows about models, data or unlearning; every other package may use it.
"""
