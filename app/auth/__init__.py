"""Identity and access: passwords, tokens, sessions, throttling, the access middleware, routes.

Handlers read the caller from ``request.state.principal`` (a ``Principal`` or None for anonymous
callers of public routes) and scope data with ``principal.allowed_branches(requested)``.
"""
