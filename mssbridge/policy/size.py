"""The size limit on encoded messages, with a refusal that says which file and by how much."""

from __future__ import annotations

from collections.abc import Sequence

from mssbridge.errors import TooLarge
from mssbridge.model import Attachment


def human_size(size: int) -> str:
    if size >= 1_000_000:
        return f"{size / 1_000_000:.1f} Mo"
    if size >= 1_000:
        return f"{size / 1_000:.0f} ko"
    return f"{size} octet" if size == 1 else f"{size} octets"


def check_declared_file(filename: str, size: int | None, limit: int) -> None:
    """Refuse a file before downloading it when its declared size is already over the limit."""
    if size is not None and size > limit:
        raise TooLarge(
            f"Le fichier « {filename} » ({human_size(size)}) dépasse la taille maximale "
            f"d'un courriel MSSanté ({human_size(limit)}) de {human_size(size - limit)}.",
            code="5.3.4",
        )


def check_encoded(encoded_size: int, limit: int, attachments: Sequence[Attachment]) -> None:
    """Refuse an encoded message over the limit, naming its largest file if it has one."""
    if encoded_size <= limit:
        return
    excess = human_size(encoded_size - limit)
    if attachments:
        largest = max(attachments, key=lambda a: len(a.data))
        message = (
            f"Le fichier « {largest.filename} » rend le courriel trop volumineux : "
            f"{human_size(encoded_size)} une fois encodé, soit {excess} de plus que la limite "
            f"MSSanté de {human_size(limit)}."
        )
    else:
        message = (
            f"Le message est trop long : {human_size(encoded_size)} une fois encodé, soit "
            f"{excess} de plus que la limite de {human_size(limit)}."
        )
    raise TooLarge(message, code="5.3.4")
