"""Pacing: how the service spends what is scarce, in one vocabulary.

- ``budget``: DigitalOcean's request window (250 a minute, 5,000 an hour for the whole
  account) and the waiting for a slot in it; the database keeps the shared window
  (``app.db.budget``), so every replica spends from one.
- ``limits``: abuse limits per client address and per credential (``Limit``), over
  the ``limits`` library's moving windows.
"""
