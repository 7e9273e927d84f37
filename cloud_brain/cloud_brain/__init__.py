"""nestor's cloud slow brain.

Robots stream experience in (`Experience.Ingest`), the store keeps it durably in SQLite, a
schedule consolidates it into new model versions in a child process, and the model bus pushes
each newly active version to subscribed robots (`Models.Subscribe`).

Modules by role: `config` (CloudConfig), `store` (experience SQLite), `registry` (model
versions), `ingest` (sequence rules), `model_bus` (fan-out), `scheduler` (consolidation
schedule), `servicers` (thin gRPC), `server` (process wiring), `metrics`, `manifest`, `cli`.
"""

__version__ = "0.1.0"
