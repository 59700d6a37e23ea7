"""Operations tools for a tap-rapid7 + target-parquet-parts pipeline: reconcile, timeline, capacity.

They read the plugins' public names (the events columns, the dataset layout, the log events)
instead of restating them, so a change in a plugin shows up here as an import error or a test.
"""
