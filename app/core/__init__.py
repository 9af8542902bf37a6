"""The domain core: accounts, names and challenge values. No HTTP, no SQL."""
