"""`python manage.py livechat_agents list|create|delete`: the license's agents, through the
Configuration API (the seeds' connector actions, on the current API).

    livechat_agents list
    livechat_agents create jane@example.com --name "Jane Doe" [--role normal]
                           [--max-chats 6] [--group 0 --group 2] [--job-title "Support"]
    livechat_agents delete jane@example.com [more@example.com ...]
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sessions_app.livechat.configuration_api import ConfigurationAPI
from sessions_app.livechat.errors import LiveChatError

ROLES = ("normal", "administrator", "viceowner")
MAX_CHATS_LIMIT = 20  # LiveChat's ceiling for max_chats_count


def _max_chats(value: str) -> int:
    # Checked here so that a typo costs no billed call and gets a precise message.
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 <= number <= MAX_CHATS_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_CHATS_LIMIT}")
    return number


class Command(BaseCommand):
    help = "List, create or delete LiveChat agents."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="command", required=True)
        commands.add_parser("list", help="list the license's agents")
        create = commands.add_parser("create", help="create an agent (invites them by e-mail)")
        create.add_argument("agent_id", metavar="EMAIL", help="the agent's e-mail (their id)")
        create.add_argument("--name", required=True)
        create.add_argument("--role", choices=ROLES, help="default: normal")
        create.add_argument(
            "--max-chats", type=_max_chats, help=f"concurrent chats, 0-{MAX_CHATS_LIMIT}"
        )
        create.add_argument(
            "--group",
            type=int,
            action="append",
            dest="groups",
            metavar="GROUP_ID",
            help="a group to join (repeat for several)",
        )
        create.add_argument("--job-title")
        delete = commands.add_parser("delete", help="delete agents")
        delete.add_argument("agent_ids", nargs="+", metavar="EMAIL")

    def handle(self, *args: Any, command: str, **options: Any) -> None:
        api = ConfigurationAPI()
        if options["verbosity"] >= 2:
            self.stdout.write(f"authenticating with {api.credentials.description}")
        if command == "list":
            self._list(api)
        elif command == "create":
            self._create(api, options)
        else:
            self._delete(api, options["agent_ids"])

    def _list(self, api: ConfigurationAPI) -> None:
        try:
            agents = api.list_agents()
        except LiveChatError as exc:
            raise CommandError(f"cannot list agents: {exc}") from exc
        for agent in agents:
            self.stdout.write(
                f"{agent.get('id')}  {agent.get('name', '')}  role={agent.get('role', '')}  "
                f"status={agent.get('login_status', '')}  "
                f"max_chats={agent.get('max_chats_count', '')}"
            )
        self.stdout.write(f"{len(agents)} agent(s)")

    def _create(self, api: ConfigurationAPI, options: dict[str, Any]) -> None:
        agent_id = options["agent_id"]
        try:
            api.create_agent(
                agent_id=agent_id,
                name=options["name"],
                role=options["role"],
                max_chats_count=options["max_chats"],
                group_ids=options["groups"],
                job_title=options["job_title"],
            )
        except LiveChatError as exc:
            if exc.error_type == "already_exists":
                raise CommandError(f"agent {agent_id} already exists") from exc
            raise CommandError(f"cannot create agent {agent_id}: {exc}") from exc
        self.stdout.write(self.style.SUCCESS(f"created agent {agent_id}"))

    def _delete(self, api: ConfigurationAPI, agent_ids: list[str]) -> None:
        failures = []
        for agent_id in agent_ids:
            try:
                api.delete_agent(agent_id=agent_id)
            except LiveChatError as exc:
                reason = "no such agent" if exc.error_type == "not_found" else str(exc)
                failures.append(f"{agent_id}: {reason}")
                continue
            self.stdout.write(f"deleted agent {agent_id}")
        if failures:
            raise CommandError("not deleted: " + "; ".join(failures))
