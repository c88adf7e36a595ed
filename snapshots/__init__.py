"""Snapshots: the JSONL record of what memwarden saw and did, its writer, reader and analysis.

Modules: `schema` (the records), `writer` (rotation, retention, never blocks), `reader`
(tolerant, fast), `burst` (flight-recorder encoding), `analysis` with `series`, `windows`,
`memory` (which recorded figure is memory), `trend`, `shape` and `verdict` (the `memwarden
analyze` verdict), `lifecycle` (levels, replacements, how supervision ended), `recommend`
(settings from the record), `report` (its JSON schema), `text` and `html` (its other forms),
`cli` (the command), `synthetic` (series of known shapes).
"""
