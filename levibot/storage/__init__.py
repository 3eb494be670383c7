"""Persistence: the file journal, PostgreSQL (migrations, COPY writer), Redis (features, counters).

Only the journal is imported eagerly; the PostgreSQL and Redis modules import their drivers
and are loaded by whoever needs them (``levibot.storage.postgres``, ``.feature_store``, ...).
"""

from levibot.storage.journal import BadRecord, Journal, JournalError, JournalReader

__all__ = ["BadRecord", "Journal", "JournalError", "JournalReader"]
