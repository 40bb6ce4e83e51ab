"""What every wing stands on: user errors, durable writes, text checks, process rank, quiet
libraries, plots, the cost ledger, the device and numeric precision, and the typed-settings machinery.

Owns: `errors` (UserError), `durable` (atomic files, crash-safe SQLite), `text` (checks on user
text), `distributed` (rank / world size / barrier), `quiet` (library warnings), `plots` (a headless
pyplot), `cost` (the ledger and prices), `device` (the device and seeds), `precision` (native bf16
on this CPU, what `mixed_precision` resolves to), `settings` (YAML + key=value -> frozen dataclasses).
May import: nothing of core (the floor). Nothing here knows a task, a model or a run directory.
"""
