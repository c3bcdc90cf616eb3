"""Reading the source and planning the target: profiles, types, the schema plan, analyze's report."""
