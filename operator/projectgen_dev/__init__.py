"""Loopback stand-ins for what cannot run here (GitHub, GitLab) and a real git smart-HTTP server.

Used by the tests and by the local demo; never by the operator itself.
"""
