"""Finding (and masking) personal data in text: emails, phone numbers, payment cards, IBANs, IP addresses.

Card numbers must pass the Luhn check and IBANs the ISO 13616 mod-97 check, so order numbers and
other digit runs are not reported as cards or accounts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


def _luhn_ok(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _iban_ok(candidate: str) -> bool:
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


_DATE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")


def _phone_ok(candidate: str) -> bool:
    return 8 <= sum(c.isdigit() for c in candidate) <= 15 and not _DATE.match(candidate)


#: kind -> (pattern, extra validation)
PATTERNS: dict[str, tuple[re.Pattern[str], Callable[[str], bool] | None]] = {
    "email": (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b"), None),
    "iban": (re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), _iban_ok),
    "card": (re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), _luhn_ok),
    # international (+CC ...), (area) local, or ddd-ddd-dddd: bare digit runs are not taken for phones
    "phone": (re.compile(r"(?<![\w+])(?:\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}|\(\d{2,4}\) ?\d{3,4}[ .-]?\d{3,4}"
                         r"|\b\d{3}[.-]\d{3}[.-]\d{4})(?![\w-])"), _phone_ok),
    "ip_address": (re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"), None),
}


@dataclass(frozen=True)
class PiiMatch:
    kind: str
    start: int
    end: int
    text: str


def find_pii(text: str) -> list[PiiMatch]:
    """Every validated match, without overlaps (earlier kinds in PATTERNS win)."""
    found: list[PiiMatch] = []
    for kind, (pattern, valid) in PATTERNS.items():
        for match in pattern.finditer(text):
            if valid is not None and not valid(match.group()):
                continue
            if any(m.start < match.end() and match.start() < m.end for m in found):
                continue
            found.append(PiiMatch(kind, match.start(), match.end(), match.group()))
    return sorted(found, key=lambda m: m.start)


def redact(text: str) -> str:
    """Replace each match with a placeholder such as ``[EMAIL]``."""
    for match in reversed(find_pii(text)):
        text = text[: match.start] + f"[{match.kind.upper()}]" + text[match.end :]
    return text
