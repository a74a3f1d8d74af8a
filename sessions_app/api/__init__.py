"""The liveagent-compatible JSON API: /init, /messages, /send, /close."""
