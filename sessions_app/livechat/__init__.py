"""Everything that speaks LiveChat: tokens, the Customer Chat API, webhook parsing."""
