"""One login attempt, shared by the token endpoint and the login page: throttle, verify, audit."""

from __future__ import annotations

import msgspec
from starlette.requests import Request

from netmon.app.auth.principals import client_address
from netmon.app.auth.throttle import account_key, address_key
from netmon.app.state import opened, server_state
from netmon.storage.users import User


class Throttled(msgspec.Struct, frozen=True):
    """The attempt was refused without checking the password; retry after that many seconds."""

    retry_after: float


async def attempt_login(
    request: Request, username: str, password: str, channel: str
) -> User | Throttled | None:
    """The user if the password is right, Throttled when too many failed, else None."""
    auth = opened(server_state(request).auth, "the identity store")
    source = client_address(request)
    keys = (account_key(username), address_key(source))
    wait = await auth.throttle.retry_after(keys)
    if wait > 0:
        return Throttled(wait)
    user = await auth.users.get_by_username(username)
    stored = await auth.users.password_hash(user.id) if user else None
    if not await auth.passwords.verify(stored, password):
        blocked = await auth.throttle.failed(keys)
        await auth.audit.record(
            "auth.login",
            actor=username,
            source=source,
            outcome="failed",
            detail={"channel": channel, "known_user": user is not None},
        )
        for key, delay in blocked.items():
            await auth.audit.record(
                "auth.lockout",
                actor=username,
                target=key.partition(":")[0],
                source=source,
                outcome="blocked",
                detail={"channel": channel, "seconds": round(delay, 3)},
            )
        return None
    assert user is not None and stored is not None
    await auth.throttle.succeeded(keys[0])
    if auth.passwords.needs_rehash(stored):
        # Cost settings were raised since this hash was made: upgrade it while we know the password.
        await auth.users.upgrade_hash(user.id, await auth.passwords.hash(password))
    await auth.audit.record(
        "auth.login", actor=user.username, source=source, detail={"channel": channel}
    )
    return user
