"""Writing rows into the target exactly: a journal batch, the saved plan, digests, quarantined rows' dependents."""
