"""Parsing of the bot commands typed in Matrix (``!mss start …``); pure, no I/O."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

COMMANDS = ("help", "start", "invite", "subject", "status", "patient", "export")

HELP_TEXT = """Commandes de la passerelle MSSanté :
• {p} start <adresse MSSanté> [objet] : ouvre une conversation avec ce correspondant
• {p} start Dr <nom> [prénom] [ville] [-- objet], ou {p} start <RPPS ou ADELI> [objet] :
  le cherche dans l'annuaire MSSanté ; s'il y a plusieurs réponses, elles sont numérotées et
  {p} start <numéro> [objet] choisit l'une d'elles (dans les 10 minutes)
• {p} invite <adresse MSSanté> : ajoute un correspondant à la conversation de ce salon
• {p} subject <objet> : change l'objet des prochains courriels de ce salon
• {p} status : montre le correspondant, l'objet et l'état des envois de ce salon
• {p} patient ins=<INS> nom=<NOM> prenoms="<Prénoms>" naissance=<AAAA-MM-JJ> sexe=M|F|U
  lieu=<COG> [qualifiee=oui] (ou local=<IPP> au lieu de ins=) : rattache ce salon à un patient ;
  ses courriels portent alors un document de santé. {p} patient show | clear : le montre, le retire
• {p} export : envoie toute la conversation aux correspondants comme un document de santé
  (une nouvelle version à chaque fois ; salon avec un patient)
• {p} help : cette aide
Vous pouvez aussi inviter directement un correspondant :
@{ghost}<adresse, avec = à la place de @>:{server}"""


@dataclass(frozen=True)
class Command:
    """A parsed command: its name and arguments (``name == "help"`` for anything unknown)."""

    name: str
    args: tuple[str, ...] = ()
    unknown: str | None = None


def is_command(body: str, prefix: str) -> bool:
    stripped = body.strip()
    return stripped == prefix or stripped.startswith(prefix + " ")


def parse(body: str, prefix: str) -> Command:
    """Split a command line; an unknown or malformed command becomes ``help``."""
    rest = body.strip()[len(prefix) :].strip()
    try:
        words = shlex.split(rest)
    except ValueError:
        words = rest.split()
    if not words:
        return Command("help")
    name, args = words[0].lower(), tuple(words[1:])
    if name not in COMMANDS:
        return Command("help", unknown=words[0])
    return Command(name, args)


def help_text(prefix: str, ghost_prefix: str, server_name: str) -> str:
    return HELP_TEXT.format(p=prefix, ghost=ghost_prefix, server=server_name)
