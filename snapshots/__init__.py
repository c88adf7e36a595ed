"""Snapshots: the JSONL record of what memwarden saw and did, its writer, reader and analysis.

Modules: `schema` (the records), `writer` (rotation, retention, never blocks), `reader`
(tolerant, fast), `burst` (flight-recorder encoding), `analysis` with `series`, `trend`,
`shape` and `verdict` (the `memwarden analyze` verdict), `report` (its JSON schema), `text` and
`html` (its other forms), `cli` (the command), `synthetic` (series of known shapes).
"""
