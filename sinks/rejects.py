"""Dead letters → rejects rows: a pure function from decoded DeadLetter records to columns."""

from __future__ import annotations

COLUMNS = ("request_id", "org_id", "thing_id", "route", "item_index", "reason", "detail", "original",
           "received_at", "rejected_at")


def rejects_columns(dead_letters: list[dict]) -> dict[str, list]:
    """One list per rejects column, one row per dead letter (the insert's shape).

    `original` is kept as text for analysts: the body's bytes decoded as UTF-8,
    undecodable bytes shown as U+FFFD (the exact bytes stay on the deadletter
    topic, which is what a replay reads). A missing thing id becomes "".
    """
    columns: dict[str, list] = {name: [] for name in COLUMNS}
    for d in dead_letters:
        columns["request_id"].append(d["request_id"])
        columns["org_id"].append(d["org_id"])
        columns["thing_id"].append(d["thing_id"] or "")
        columns["route"].append(d["route"])
        columns["item_index"].append(d["item_index"])
        columns["reason"].append(d["reason"])
        columns["detail"].append(d["detail"])
        columns["original"].append(d["original"].decode("utf-8", errors="replace"))
        columns["received_at"].append(d["received_at"])
        columns["rejected_at"].append(d["rejected_at"])
    return columns
