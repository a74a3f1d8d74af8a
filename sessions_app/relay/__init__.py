"""The story of a conversation, vendor-neutral: a user opens a chat, a user said, an agent said,
the chat ended, the user closed it. Webhooks and the JSON API call the `user_*`/`agent_*`
functions (cheap, local, inside one transaction); the delivery worker calls `apply_*` and
`deliver_*`.

- `mailbox`: a conversation's rows (what waits for the agent, what waits for the user).
- `chats`: the user's LiveChat customer and chat: starting, finding again, opening for /init.
- `line_events` and `livechat_events`: each vendor's webhook events applied to a conversation.
- `livechat_delivery` and `line_delivery`: what the worker sends to each vendor.
"""

from .chats import user_open_chat
from .line_delivery import deliver_read_mark, deliver_to_user, push_batch
from .line_events import apply_line_inbox
from .livechat_delivery import deliver_to_agent
from .livechat_events import agent_event, apply_parked_livechat_events
from .mailbox import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    IdempotencyKeyReused,
    pull_next,
    user_closed,
    user_said,
    user_said_once,
)

__all__ = [
    "IDEMPOTENCY_KEY_MAX_LENGTH",
    "IdempotencyKeyReused",
    "agent_event",
    "apply_line_inbox",
    "apply_parked_livechat_events",
    "deliver_read_mark",
    "deliver_to_agent",
    "deliver_to_user",
    "pull_next",
    "push_batch",
    "user_closed",
    "user_open_chat",
    "user_said",
    "user_said_once",
]
