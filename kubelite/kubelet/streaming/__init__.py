"""The wire protocols of kubectl's streaming paths: CRI log files, channel WebSockets and SPDY/3.1."""
