"""Bot commands and portal set-up: ``!mss start``, invites of ghosts, greetings, status."""

from __future__ import annotations

import logging
from typing import Any

from mssbridge.convert.address import normalize_address
from mssbridge.errors import Rejected, TemporaryFailure
from mssbridge.flows.context import BridgeContext
from mssbridge.flows.directory_start import ghost_directory_name, resolve_start
from mssbridge.flows.patient import (
    USAGE,
    PatientArgsError,
    bridge_root,
    describe,
    parse_patient_args,
    patient_from_bytes,
    patient_to_bytes,
    topic_for,
)
from mssbridge.flows.whitelist_gate import why_refused
from mssbridge.matrix.commands import Command, help_text, parse
from mssbridge.policy.access import is_admin, may_set_patient_context
from mssbridge.policy.loops import should_store_event
from mssbridge.store.repo import correspondents_of
from mssbridge.store.tables import Inbox, Outbox, Portal, RowState

log = logging.getLogger("mssbridge.commands")

GHOST_SUFFIX = " (MSSanté)"


def ghost_display_name(address: str, name: str = "") -> str:
    return f"{name or address}{GHOST_SUFFIX}"


class CommandFlow:
    """Runs the commands typed to the bot and the portal life cycle they trigger."""

    def __init__(self, ctx: BridgeContext) -> None:
        self.ctx = ctx

    @property
    def _help(self) -> str:
        matrix = self.ctx.settings.matrix
        return help_text(matrix.command_prefix, matrix.ghost_prefix, matrix.server_name)

    async def run(self, row: Outbox, event: dict[str, Any], portal: Portal | None) -> None:
        command = parse(str(event["content"]["body"]), self.ctx.settings.matrix.command_prefix)
        handler = {
            "start": self._start,
            "invite": self._invite,
            "subject": self._subject,
            "status": self._status,
            "patient": self._patient,
        }.get(command.name)
        if handler is None:
            await self._reply_help(row, command)
        else:
            await handler(row, command, portal)
        await self.ctx.store.finish(Outbox, row.id, RowState.DONE)

    async def greet(self, row: Outbox) -> None:
        await self.ctx.notice(row.room_id, self._help, f"mssb-greet-{row.id}")

    async def _reply_help(self, row: Outbox, command: Command) -> None:
        text = self._help
        if command.unknown:
            text = f"Commande inconnue « {command.unknown[:40]} ».\n" + text
        await self.ctx.notice(row.room_id, text, f"mssb-help-{row.id}", row.event_id)

    async def _address_arg(self, row: Outbox, command: Command) -> str | None:
        if not command.args:
            await self._reply_help(row, command)
            return None
        try:
            address = normalize_address(command.args[0])
        except ValueError as exc:
            await self.ctx.notice(
                row.room_id, f"Adresse refusée : {exc}", f"mssb-bad-{row.id}", row.event_id
            )
            return None
        reason = await why_refused(self.ctx.store, self.ctx.settings, address)
        if reason is not None:
            await self.ctx.notice(
                row.room_id,
                f"Adresse refusée : {address} ({reason}).",
                f"mssb-bad-{row.id}",
                row.event_id,
            )
            return None
        return address

    async def _start(self, row: Outbox, command: Command, _portal: Portal | None) -> None:
        if command.args and "@" not in command.args[0]:  # a name, an RPPS/ADELI, a pick
            resolved = await resolve_start(self.ctx, row, command.args)
            if resolved is None:
                return
            command = Command("start", tuple(a for a in resolved if a))
        address = await self._address_arg(row, command)
        if address is None:
            return
        subject = " ".join(command.args[1:])
        key = f"cmd-{row.id}"
        portal = await self.ctx.store.portal_by_key(key)
        if portal is None:
            portal = await self.ctx.store.create_portal(
                subject=subject, correspondents=[address], conversation_key=key
            )
        if portal.room_id is None:
            room_id = await self.ctx.rooms.create_room(
                self.ctx.bot_id, name=f"{address} (MSSanté)", topic=subject
            )
            await self.ctx.store.update_portal(portal.id, room_id=room_id)
            portal.room_id = room_id
        await self._ghost_joins(portal.room_id, address)
        await self.ctx.rooms.invite(self.ctx.bot_id, portal.room_id, row.sender)
        await self.ctx.notice(
            row.room_id,
            f"Conversation ouverte avec {address} : https://matrix.to/#/{portal.room_id}",
            f"mssb-started-{row.id}",
            row.event_id,
        )

    async def _invite(self, row: Outbox, command: Command, portal: Portal | None) -> None:
        address = await self._address_arg(row, command)
        if address is None:
            return
        await self.attach_correspondent(row.room_id, address, row.id)

    async def _subject(self, row: Outbox, command: Command, portal: Portal | None) -> None:
        if portal is None:
            await self.ctx.notice(
                row.room_id,
                "Ce salon n'est pas une conversation MSSanté.",
                f"mssb-subject-{row.id}",
                row.event_id,
            )
            return
        subject = " ".join(command.args).strip()[:200]
        await self.ctx.store.update_portal(portal.id, subject=subject)
        await self.ctx.notice(
            row.room_id,
            "Objet des prochains courriels mis à jour.",
            f"mssb-subject-{row.id}",
            row.event_id,
        )

    async def _patient(self, row: Outbox, command: Command, portal: Portal | None) -> None:
        """``patient show|clear|<identité>``: never logs the identity."""

        async def say(text: str) -> None:
            await self.ctx.notice(row.room_id, text, f"mssb-patient-{row.id}", row.event_id)

        prefix = self.ctx.settings.matrix.command_prefix
        if portal is None:
            await say("Ce salon n'est pas une conversation MSSanté.")
            return
        action = command.args[0].lower() if command.args else ""
        if action == "show":
            data = self.ctx.store.patient_of(portal)
            await say(
                describe(patient_from_bytes(data))
                if data
                else "Aucun patient n'est rattaché à ce salon."
            )
            return
        if not may_set_patient_context(row.sender, self.ctx.access):
            await say("Vous n'êtes pas autorisé(e) à définir le patient de cette conversation.")
            return
        if action == "clear":
            await self.ctx.store.set_patient(portal.id, None)
            await self._patient_topic(row, portal.subject)
            log.info("portal %s: patient context cleared", portal.id)
            await say("Patient retiré : les prochains courriels ne portent plus de document.")
            return
        mssante = self.ctx.settings.mssante
        if not command.args:
            await say(USAGE.format(p=prefix))
            return
        if not mssante.documents_enabled:
            await say(
                "La passerelle n'est pas configurée pour les documents de santé (section "
                "[mssante] : nil, name, finess ou siret). Contactez l'équipe informatique."
            )
            return
        root = bridge_root(mssante, self.ctx.settings.mailbox.address)
        try:
            patient = parse_patient_args(command.args, mssante, root)
        except PatientArgsError as exc:
            await say(f"Patient refusé : {exc}\n" + USAGE.format(p=prefix))
            return
        await self.ctx.store.set_patient(portal.id, patient_to_bytes(patient))
        await self._patient_topic(row, topic_for(patient, portal.subject))
        log.info("portal %s: patient context set", portal.id)
        await say(
            describe(patient) + "\nLes prochains messages de ce salon partiront avec un "
            "document de santé (IHE_XDM.ZIP et PDF)."
        )

    async def _patient_topic(self, row: Outbox, topic: str) -> None:
        try:
            await self.ctx.rooms.set_topic(self.ctx.bot_id, row.room_id, topic)
        except (Rejected, TemporaryFailure) as exc:
            log.info("portal topic not updated: %s", type(exc).__name__)

    async def _status(self, row: Outbox, _command: Command, portal: Portal | None) -> None:
        if portal is None:
            text = "Ce salon n'est pas une conversation MSSanté.\n" + self._help
        else:
            people = ", ".join(correspondents_of(portal)) or "aucun"
            text = (
                f"Correspondant(s) : {people}\nObjet : {portal.subject or '(par défaut)'}\n"
                f"Boîte de la passerelle : {self.ctx.settings.mailbox.address}"
            )
        if is_admin(row.sender, self.ctx.access):
            text += "\n" + await self._queue_summary()
        await self.ctx.notice(row.room_id, text, f"mssb-status-{row.id}", row.event_id)

    async def _queue_summary(self) -> str:
        """Queue counts by state (admins only: they describe the whole bridge's traffic)."""
        lines = []
        for name, table in (("Envois", Outbox), ("Réceptions", Inbox)):
            counts = (await self.ctx.store.counts(table)).by_state
            summary = ", ".join(f"{state}={n}" for state, n in sorted(counts.items()))
            lines.append(f"{name} : {summary or 'vide'}")
        return "\n".join(lines)

    async def attach_correspondent(
        self, room_id: str, address: str, row_id: int | None, since: float | None = None
    ) -> None:
        """Make ``room_id`` a portal (if not yet one) with ``address`` among its correspondents.

        ``since`` (milliseconds): messages written in the room from then on, before the ghost
        joined, were not pushed to the bridge; they are read back and queued.
        """
        await self._ghost_joins(room_id, address)
        ghost = self.ctx.ghost_id(address)
        portal = await self.ctx.store.portal_by_room(room_id)
        if portal is None:
            subject = await self.ctx.rooms.room_name(ghost, room_id)
            await self.ctx.store.create_portal(
                subject=subject, correspondents=[address], room_id=room_id
            )
        elif address not in correspondents_of(portal):
            await self.ctx.store.update_portal(
                portal.id, correspondents=[*correspondents_of(portal), address]
            )
        if since is not None:
            await self._catch_up(room_id, address, since, row_id)
        try:
            await self.ctx.rooms.invite(ghost, room_id, self.ctx.bot_id)
            await self.ctx.rooms.join(self.ctx.bot_id, room_id)
        except (Rejected, TemporaryFailure) as exc:  # the bot is optional in a portal
            log.info("bot could not join portal room: %s", type(exc).__name__)
        reason = await why_refused(self.ctx.store, self.ctx.settings, address)
        if reason is not None:
            await self.ctx.notice(
                room_id,
                f"⚠️ {address} : {reason}. Les messages de ce salon ne lui seront pas transmis.",
                f"mssb-unlisted-{row_id}",
            )

    async def _catch_up(self, room_id: str, address: str, since: float, row_id: int | None) -> None:
        """Queue what the room's members wrote between the invite and the ghost's join."""
        events = await self.ctx.rooms.recent_events(self.ctx.ghost_id(address), room_id)
        missed = [
            {**event, "room_id": room_id}
            for event in events
            if isinstance(event.get("origin_server_ts"), int)
            and event["origin_server_ts"] >= since
            and should_store_event({**event, "room_id": room_id}, self.ctx.identity)
            and event.get("type") != "m.room.member"
        ]
        stored = await self.ctx.store.store_transaction(f"catch-up:{room_id}:{row_id}", missed)
        if stored:
            log.info("portal room caught up %d message(s) sent before the ghost joined", stored)

    async def _ghost_joins(self, room_id: str, address: str) -> None:
        ghost = self.ctx.ghost_id(address)
        name = await ghost_directory_name(self.ctx, address)
        await self.ctx.rooms.ensure_ghost(ghost, ghost_display_name(address, name or ""))
        await self.ctx.rooms.join(ghost, room_id)
