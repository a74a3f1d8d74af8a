"""Stand-ins for LINE and LiveChat: real HTTP servers on loopback (tests and sandbox)."""
