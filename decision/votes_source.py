"""The one place the report reads votes: the gateway's vote store -> preference Judgements.

    judgements = read_judgements(".cache/votes.sqlite3", "compare")   # side-by-side votes on the page
    live = read_judgements("postgresql://gateway@db/gateway", "live")   # votes on mirrored live pairs
    # None when a SQLite file does not exist (nothing was ever stored), else a list (maybe empty)

Through gateway.votes.VoteStore.judgements (one gateway.preference.Judgement per vote: models,
outcome, answer lengths in characters of the answer the judge saw), so a change to the store's
tables stays in the store. A SQLite path that does not exist is not created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from gateway.database import is_database_url, open_database
from gateway.preference import Judgement
from gateway.votes import VoteStore


def read_judgements(target: str | Path, source: Literal["compare", "live"] = "compare") -> list[Judgement] | None:
    """Every vote of `source` as a Judgement (left = a), oldest first; None if there is no store."""
    if not (isinstance(target, str) and is_database_url(target)) and not Path(target).exists():
        return None
    database = open_database(target)
    try:
        return VoteStore(database).judgements(source)
    finally:
        database.close()


def describe_target(target: str | Path) -> str:
    """The store as a report may print it: a database URL without its password."""
    text = str(target)
    if not is_database_url(text) or "@" not in text:
        return text
    scheme, _, rest = text.partition("://")
    credentials, _, host = rest.rpartition("@")
    return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"
