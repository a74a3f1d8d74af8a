"""Everything that speaks LINE: the webhook's signature and events, and the Messaging API client."""
