"""Identity and access: passwords, tokens, sessions, throttling, the access middleware, routes.

Handlers read the caller with ``principal_of(request)`` (a ``Principal`` the middleware put in
the request's state, or None for anonymous callers of public routes) and scope data with
``principal.allowed_branches(requested)``.
"""
