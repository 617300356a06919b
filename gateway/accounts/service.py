"""Accounts, as rules: who may have one (roles), what a password must be, how it is hashed
(argon2id), the TOTP second factor, lockout after repeated failures, one-time set-up links and
sessions that die when idle. No HTTP and no SQL here: the pages and the command line call this,
storage is behind the repository, time comes from the injected clock."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.accounts.repository import (
    Account,
    AccountExists,
    AccountsRepository,
    Failures,
    StoredAccount,
)
from gateway.audit.chain import AuditEvent
from gateway.clock import Clock
from gateway.errors import GatewayError, SettingsError, UsageError
from gateway.keys.datacipher import DataCipher

log = structlog.get_logger("gateway.accounts")

ROLES = ("secretariat", "panel", "admin")
# Roles that see personal data of many cases or change who may: a password is not enough.
TOTP_ROLES = frozenset({"secretariat", "admin"})
TOTP_ISSUER = "SBNI CMR panel"
MIN_PASSWORD = 12
# Argon2 cost grows with the input: a cap keeps a huge "password" from tying up a worker.
MAX_PASSWORD = 256
# The code must follow the password within this, or the sign-in starts again.
SECOND_STEP_WINDOW = timedelta(minutes=5)
# A session's last_seen is written at most this often; idle expiry is exact to within it.
TOUCH_EVERY = timedelta(minutes=1)
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")
MAX_EMAIL = 190
# Passwords long enough for the length rule that are still among the first tried.
COMMON_PASSWORDS = frozenset(
    {
        "password1234",
        "password12345",
        "passwordpassword",
        "123456789012",
        "1234567890123",
        "qwertyuiopas",
        "qwerty123456",
        "iloveyou1234",
        "welcome12345",
        "administrator",
        "letmein12345",
        "changeme1234",
        "safeguarding",
        "safeguarding1",
        "northernireland",
        "belfast12345",
    }
)


MIN_MEMORY_KIB = 8192


def password_hasher(memory_kib: int) -> PasswordHasher:
    """argon2id (argon2-cffi's default type) at RFC 9106's second recommended cost, with the
    memory tunable to the machine; below 8 MiB it is refused."""
    if memory_kib < MIN_MEMORY_KIB:
        raise SettingsError(f"setting 'web_password_memory_kib' must be at least {MIN_MEMORY_KIB}")
    return PasswordHasher(time_cost=3, memory_cost=memory_kib, parallelism=4)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """256 bits from the CSPRNG, URL-safe."""
    return secrets.token_urlsafe(32)


def normalise_email(email: str) -> str:
    return email.strip().lower()


class SetupLinkGone(GatewayError):
    """Used, expired, replaced or unknown: one answer for all."""

    code = "setup_link_gone"
    status = 410
    title = "This set-up link is no longer valid"


class PasswordRejected(GatewayError):
    code = "password_rejected"
    status = 422
    title = "Choose another password"

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__(None)
        self.problems = problems


class SignInFailed(GatewayError):
    code = "sign_in_failed"
    status = 401
    title = "The email address or password is wrong"


class CodeRejected(GatewayError):
    code = "code_rejected"
    status = 401
    title = "That code is wrong, has expired or was used already"


class AccountLocked(GatewayError):
    code = "account_locked"
    status = 429
    title = "Too many failed sign-in attempts"

    def __init__(self, until: datetime, now: datetime) -> None:
        self.until = until
        self.retry_after = max(1, int((until - now).total_seconds()))
        minutes = -(-self.retry_after // 60)
        super().__init__(
            f"After repeated failed attempts, signing in to this account is blocked for "
            f"{minutes} more minute{'s' if minutes != 1 else ''}. Wait and try again, or ask "
            "an administrator if you have forgotten your password."
        )

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class NotSignedIn(GatewayError):
    code = "not_signed_in"
    status = 401
    title = "Sign in to continue"


class Forbidden(GatewayError):
    code = "forbidden"
    status = 403
    title = "This page is not open to your role"


@dataclass(frozen=True)
class Policy:
    idle: timedelta
    max_age: timedelta
    setup_link: timedelta
    max_failures: int
    lockout: timedelta

    def __post_init__(self) -> None:
        for name in ("idle", "max_age", "setup_link", "lockout"):
            if getattr(self, name) <= timedelta(0):
                raise SettingsError(f"the account setting for {name} must be at least 1")
        if self.max_failures < 1:
            raise SettingsError("setting 'web_login_max_failures' must be at least 1")


@dataclass(frozen=True)
class SetupLink:
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class Enrolment:
    """What an authenticator app needs, as text: the otpauth URI and the secret itself."""

    secret: str
    uri: str

    @property
    def grouped(self) -> str:
        return " ".join(self.secret[i : i + 4] for i in range(0, len(self.secret), 4))


@dataclass(frozen=True)
class SignedIn:
    session_id: str
    # True while the second factor is still to come (the session is not usable yet).
    needs_code: bool


def _password_problem(password: str, email: str) -> str | None:
    lowered = password.lower()
    local = email.split("@", 1)[0].lower()
    if len(password) < MIN_PASSWORD:
        return f"Use at least {MIN_PASSWORD} characters."
    if len(password) > MAX_PASSWORD:
        return f"Use at most {MAX_PASSWORD} characters."
    if lowered in COMMON_PASSWORDS or len(set(password)) < 4:
        return "This password is too easy to guess. Try three random words."
    if lowered == email.lower() or (len(local) >= 4 and local in lowered):
        return "Do not use your email address in your password."
    return None


def check_password(password: str, confirm: str, email: str) -> dict[str, str]:
    """The problems with a chosen password, by form field (none: it is acceptable). Length
    over composition rules (NCSC guidance), and not one of the obvious ones."""
    problem = _password_problem(password, email)
    if problem:
        return {"password": problem}
    if password != confirm:
        return {"confirm": "The two passwords are not the same."}
    return {}


def next_failures(previous: Failures | None, now: datetime, policy: Policy) -> Failures:
    """One more failed attempt. Failures older than the lockout period no longer count, and
    an expired lock starts the count again."""
    count = 1
    if previous is not None:
        expired_lock = previous.locked_until is not None and previous.locked_until <= now
        stale = now - previous.last_failure_at >= policy.lockout
        if not expired_lock and not stale:
            count = previous.failures + 1
    locked = now + policy.lockout if count >= policy.max_failures else None
    return Failures(count, locked, now)


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The 30-second time step a code belongs to, allowing one step of clock drift either way
    (RFC 6238 section 6); None if it matches none."""
    code = code.replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for offset in (0, -1, 1):
        if hmac.compare_digest(totp.at(now, counter_offset=offset), code):
            return current + offset
    return None


class AccountsService:
    def __init__(
        self,
        *,
        clock: Clock,
        repo: AccountsRepository,
        cipher: DataCipher,
        policy: Policy,
        base_url: str,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.clock = clock
        self.repo = repo
        self.cipher = cipher
        self.policy = policy
        self.base_url = base_url.rstrip("/")
        self.hasher = hasher or password_hasher(65536)
        self._dummy_hash: str | None = None

    # -- administration -----------------------------------------------------------------------

    def _link(self, now: datetime) -> tuple[str, SetupLink]:
        token = new_token()
        expires = now + self.policy.setup_link
        return token, SetupLink(f"{self.base_url}/account/setup/{token}", expires)

    async def add(self, email: str, role: str, name: str, actor: str) -> tuple[Account, SetupLink]:
        email = normalise_email(email)
        if len(email) > MAX_EMAIL or not EMAIL.fullmatch(email):
            raise UsageError("give the person's email address (it is how they sign in)")
        if role not in ROLES:
            raise UsageError(f"the role must be one of: {', '.join(ROLES)}")
        name = name.strip()[:200]
        now = self.clock.now()
        token, link = self._link(now)
        try:
            account = await self.repo.add(
                email,
                name,
                role,
                digest(token),
                link.expires_at,
                lambda account_id: AuditEvent(
                    actor, "account.created", f"account:{account_id}", {"role": role}
                ),
                now,
            )
        except AccountExists:
            raise UsageError(f"there is already an account for {email}") from None
        return account, link

    async def _existing(self, email: str) -> StoredAccount:
        found = await self.repo.by_email(normalise_email(email))
        if found is None:
            raise UsageError(f"there is no account for {normalise_email(email)}")
        return found

    async def reset(self, email: str, actor: str) -> tuple[Account, SetupLink]:
        """A new set-up link (forgotten password, lost authenticator): everything else ends."""
        stored = await self._existing(email)
        if stored.account.status == "disabled":
            raise UsageError(f"the account for {stored.account.email} is disabled")
        now = self.clock.now()
        token, link = self._link(now)
        await self.repo.reset(
            stored.account.id,
            digest(token),
            link.expires_at,
            AuditEvent(actor, "account.reset", f"account:{stored.account.id}"),
            now,
        )
        return stored.account, link

    async def disable(self, email: str, actor: str) -> Account:
        stored = await self._existing(email)
        await self.repo.disable(
            stored.account.id,
            AuditEvent(actor, "account.disabled", f"account:{stored.account.id}"),
            self.clock.now(),
        )
        return stored.account

    async def all_accounts(self) -> list[Account]:
        return await self.repo.all_accounts()

    # -- set-up from the link -----------------------------------------------------------------

    async def _from_link(self, token: str) -> StoredAccount:
        if not token or len(token) > 100:
            raise SetupLinkGone()
        found = await self.repo.by_link(digest(token), self.clock.now())
        if found is None:
            raise SetupLinkGone()
        return found

    async def setup_landing(self, token: str) -> Account:
        """What the link's page shows; changes nothing (mail scanners fetch links)."""
        return (await self._from_link(token)).account

    async def choose_password(self, token: str, password: str, confirm: str) -> Enrolment | None:
        """Set the password; for a role that needs a second factor, start its enrolment (the
        secret to show) and keep the link live until the first code confirms it."""
        stored = await self._from_link(token)
        account = stored.account
        problems = check_password(password, confirm, account.email)
        if problems:
            raise PasswordRejected(problems)
        password_hash = await asyncio.to_thread(self.hasher.hash, password)
        now = self.clock.now()
        enrolment = None
        pending = None
        audit = None
        if account.role in TOTP_ROLES:
            secret = pyotp.random_base32()
            pending = self.cipher.encrypt(secret.encode(), self._aad(account.id, pending=True))
            enrolment = self._enrolment(account, secret)
        else:
            audit = AuditEvent(account.actor, "account.set_up", f"account:{account.id}")
        if not await self.repo.set_password(
            account.id, digest(token), password_hash, pending, audit, now
        ):
            raise SetupLinkGone()
        return enrolment

    def _aad(self, account_id: int, pending: bool = False) -> bytes:
        return f"totp{'-pending' if pending else ''}\x00{account_id}".encode()

    def _enrolment(self, account: Account, secret: str) -> Enrolment:
        uri = pyotp.TOTP(secret).provisioning_uri(name=account.email, issuer_name=TOTP_ISSUER)
        return Enrolment(secret, uri)

    def _pending_secret(self, stored: StoredAccount) -> str | None:
        if stored.totp_pending is None or stored.totp_key_id is None:
            return None
        return self.cipher.decrypt(
            stored.totp_key_id, stored.totp_pending, self._aad(stored.account.id, pending=True)
        ).decode()

    async def enrolment(self, token: str) -> Enrolment:
        """The enrolment under way, to show again after a wrong code."""
        stored = await self._from_link(token)
        secret = self._pending_secret(stored)
        if secret is None:
            raise SetupLinkGone()
        return self._enrolment(stored.account, secret)

    async def confirm_enrolment(self, token: str, code: str) -> Account:
        stored = await self._from_link(token)
        secret = self._pending_secret(stored)
        if secret is None or stored.password_hash is None:
            raise SetupLinkGone()
        now = self.clock.now()
        step = matching_step(secret, code, now)
        if step is None:
            raise CodeRejected()
        account = stored.account
        key_id, blob = self.cipher.encrypt(secret.encode(), self._aad(account.id))
        if not await self.repo.enrol_totp(
            account.id,
            digest(token),
            key_id,
            blob,
            step,
            AuditEvent(account.actor, "account.set_up", f"account:{account.id}", {"totp": True}),
            now,
        ):
            raise SetupLinkGone()
        return account

    # -- signing in ---------------------------------------------------------------------------

    async def _refuse_if_locked(self, email: str, now: datetime) -> None:
        failures = await self.repo.failures(email)
        if failures and failures.locked_until and failures.locked_until > now:
            raise AccountLocked(failures.locked_until, now)

    async def _failed(self, email: str, account: Account | None, now: datetime) -> None:
        def audit(f: Failures) -> AuditEvent | None:
            if account is None:
                return None
            action = "account.locked" if f.locked_until else "account.sign_in_failed"
            return AuditEvent(
                "web:anonymous", action, f"account:{account.id}", {"failures": f.failures}
            )

        failures = await self.repo.record_failure(
            email, lambda previous: next_failures(previous, now, self.policy), audit, now
        )
        log.warning(
            "sign_in_failed", failures=failures.failures, locked=bool(failures.locked_until)
        )
        if failures.locked_until:
            raise AccountLocked(failures.locked_until, now)

    def _check_password(self, stored: StoredAccount | None, password: str) -> bool:
        """Runs an argon2 verification whether or not the account exists, so the time taken
        does not tell which addresses have accounts."""
        usable = (
            stored is not None
            and stored.account.status == "active"
            and stored.password_hash is not None
            and len(password) <= MAX_PASSWORD
        )
        if not usable:
            if self._dummy_hash is None:
                self._dummy_hash = self.hasher.hash(new_token())
            with contextlib.suppress(VerificationError, InvalidHashError):
                self.hasher.verify(self._dummy_hash, password[:MAX_PASSWORD])
            return False
        assert stored is not None and stored.password_hash is not None
        try:
            return bool(self.hasher.verify(stored.password_hash, password))
        except (VerificationError, InvalidHashError):
            return False

    async def sign_in(self, email: str, password: str) -> SignedIn:
        email = normalise_email(email)[:MAX_EMAIL]
        now = self.clock.now()
        if not email:
            raise SignInFailed()
        await self._refuse_if_locked(email, now)
        stored = await self.repo.by_email(email)
        if not await asyncio.to_thread(self._check_password, stored, password):
            await self._failed(email, stored.account if stored else None, now)
            raise SignInFailed()
        assert stored is not None and stored.password_hash is not None
        account = stored.account
        if self.hasher.check_needs_rehash(stored.password_hash):
            await self.repo.rehash(account.id, await asyncio.to_thread(self.hasher.hash, password))
        session_id = new_token()
        if account.role in TOTP_ROLES:
            # Failures are cleared only once the code is right too: a known password must not
            # reset the count for guessing codes.
            await self.repo.new_session(digest(session_id), account.id, "totp", now)
            return SignedIn(session_id, needs_code=True)
        await self.repo.clear_failures(email)
        await self._open(session_id, account, now)
        return SignedIn(session_id, needs_code=False)

    async def _open(
        self, session_id: str, account: Account, now: datetime, replaces: str | None = None
    ) -> None:
        await self.repo.new_session(
            digest(session_id),
            account.id,
            "full",
            now,
            replaces=replaces,
            audit=AuditEvent(account.actor, "account.signed_in", f"account:{account.id}"),
            stale_before=now - self.policy.max_age,
        )

    async def awaiting_code(self, session_id: str) -> Account | None:
        """The account whose password was given in this session and whose code is awaited."""
        found = await self._pending(session_id)
        return found.account if found else None

    async def _pending(self, session_id: str) -> StoredAccount | None:
        if not session_id or len(session_id) > 100:
            return None
        session = await self.repo.session(digest(session_id))
        if (
            session is None
            or session.stage != "totp"
            or session.stored.account.status != "active"
            or self.clock.now() - session.created_at > SECOND_STEP_WINDOW
        ):
            return None
        return session.stored

    async def second_factor(self, session_id: str, code: str) -> str:
        """Check the code of a session waiting for it; on success the session is replaced by
        a new, signed-in one (a new id, so that a planted id is worth nothing)."""
        stored = await self._pending(session_id)
        if stored is None or stored.totp_secret is None or stored.totp_key_id is None:
            raise NotSignedIn()
        account = stored.account
        now = self.clock.now()
        try:
            await self._refuse_if_locked(account.email, now)
            secret = self.cipher.decrypt(
                stored.totp_key_id, stored.totp_secret, self._aad(account.id)
            ).decode()
            step = matching_step(secret, code, now)
            if step is None or not await self.repo.accept_step(account.id, step):
                await self._failed(account.email, account, now)
                raise CodeRejected()
        except AccountLocked:
            await self.repo.end_session(digest(session_id), None, now)
            raise
        await self.repo.clear_failures(account.email)
        new_id = new_token()
        await self._open(new_id, account, now, replaces=digest(session_id))
        return new_id

    async def authenticate(self, session_id: str | None) -> Account | None:
        """The signed-in account of a session id, or None; a session idle too long, too old or
        of a disabled account is deleted on the way."""
        if not session_id or len(session_id) > 100:
            return None
        id_hash = digest(session_id)
        session = await self.repo.session(id_hash)
        if session is None or session.stage != "full":
            return None
        now = self.clock.now()
        if (
            session.stored.account.status != "active"
            or now - session.last_seen_at >= self.policy.idle
            or now - session.created_at >= self.policy.max_age
        ):
            await self.repo.end_session(id_hash, None, now)
            return None
        if now - session.last_seen_at >= TOUCH_EVERY:
            await self.repo.touch(id_hash, now)
        return session.stored.account

    async def sign_out(self, session_id: str, account: Account) -> None:
        await self.repo.end_session(
            digest(session_id),
            AuditEvent(account.actor, "account.signed_out", f"account:{account.id}"),
            self.clock.now(),
        )

    async def sign_out_everywhere(self, account: Account) -> int:
        return await self.repo.end_all(
            account.id,
            lambda n: AuditEvent(
                account.actor,
                "account.signed_out_everywhere",
                f"account:{account.id}",
                {"sessions": n},
            ),
            self.clock.now(),
        )

    async def sessions(self, account: Account) -> int:
        return await self.repo.session_count(account.id)
