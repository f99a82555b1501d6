"""Access tokens: short-lived JWTs signed and verified with joserfc (HS256 only).

Verification pins the algorithm list (so "none" and RS256/HS256 confusion cannot get through),
and checks ``iss``, ``aud``, ``exp``, ``iat`` and the presence of ``jti``. What a signature
cannot tell (revoked on logout, user deleted, password changed since) is checked against the
database by the middleware: ``gen`` is the user's token generation at issue time.
"""

from __future__ import annotations

import secrets
import time

import msgspec
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from netmon.app.settings import AuthSettings
from netmon.storage.users import User

ALGORITHMS = ("HS256",)
MIN_SECRET_LENGTH = 32
CLOCK_LEEWAY_S = 30


class TokenError(Exception):
    """The token cannot be accepted; the message is safe to show the client."""


class TokenClaims(msgspec.Struct, frozen=True, kw_only=True):
    """The checked claims of an access token."""

    sub: str
    jti: str
    gen: int
    iat: int
    exp: int


class IssuedToken(msgspec.Struct, frozen=True, kw_only=True):
    """A freshly signed token and what the token endpoint reports about it."""

    token: str
    jti: str
    expires_at: int
    expires_in: int


class TokenService:
    """Signs and verifies access tokens with one HMAC key."""

    def __init__(self, secret: str, settings: AuthSettings) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"auth.jwt_secret must be at least {MIN_SECRET_LENGTH} characters")
        self._key = OctKey.import_key(secret.encode())
        self._settings = settings
        self._registry = jwt.JWTClaimsRegistry(
            leeway=CLOCK_LEEWAY_S,
            iss={"essential": True, "value": settings.issuer},
            aud={"essential": True, "value": settings.audience},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        )

    def issue(self, user: User, now: float | None = None) -> IssuedToken:
        """A signed access token for ``user``."""
        issued_at = int(time.time() if now is None else now)
        lifetime = self._settings.access_token_minutes * 60
        jti = secrets.token_urlsafe(16)
        claims = {
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "sub": str(user.id),
            "iat": issued_at,
            "exp": issued_at + lifetime,
            "jti": jti,
            "gen": user.token_generation,
        }
        token = jwt.encode({"alg": ALGORITHMS[0]}, claims, self._key, algorithms=list(ALGORITHMS))
        return IssuedToken(
            token=token, jti=jti, expires_at=issued_at + lifetime, expires_in=lifetime
        )

    def verify(self, token: str) -> TokenClaims:
        """The claims of a valid token; raise TokenError saying why it is not."""
        if len(token) > 4096:
            raise TokenError("token too long")
        try:
            decoded = jwt.decode(token, self._key, algorithms=list(ALGORITHMS))
            self._registry.validate(decoded.claims)
        except JoseError as error:
            raise TokenError(_describe(error)) from None
        except ValueError:  # malformed base64/JSON that joserfc lets through as ValueError
            raise TokenError("malformed token") from None
        if int(decoded.claims["iat"]) > time.time() + CLOCK_LEEWAY_S:
            raise TokenError("token issued in the future")
        try:
            return msgspec.convert(decoded.claims, TokenClaims, strict=True)
        except msgspec.ValidationError as error:
            raise TokenError(f"invalid claims: {error}") from None


def _describe(error: JoseError) -> str:
    name = type(error).__name__
    if name == "ExpiredTokenError":
        return "token expired"
    if name in ("BadSignatureError", "UnsupportedAlgorithmError", "MissingAlgorithmError"):
        return "invalid signature or algorithm"
    return error.description or error.error or "invalid token"


def generate_secret() -> str:
    """A new random signing key (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)
