"""Personal data in text: find e-mail addresses, phone numbers, IP addresses and payment-card
numbers, count them per type, and replace the types asked for with typed placeholders.

    >>> scan = PiiScanner(redact=["email", "card"])
    >>> scan("mail ann@example.org, card 4111 1111 1111 1111, not 4111 1111 1111 1112")
    'mail <EMAIL>, card <CARD>, not 4111 1111 1111 1112'
    >>> scan.found["email"], scan.found["card"], scan.redacted["phone"]
    (1, 1, 0)

Each type is a regular expression plus, where a format has one, a check: a card number is 13-19
digits (in groups separated by single spaces or dashes, or none) that pass the Luhn checksum; an
IPv6 candidate must parse (`ipaddress`) and hold at least 4 hex digits (so that slices such as
`a[1::2]` are not addresses); a phone number is either international (`+` and a country code,
8-15 digits in groups) or North-American shaped (`(555) 123-4567`, `555-123-4567`,
`555.123.4567`). The types apply in the order of KINDS, each to what the earlier ones left. Only
the matched characters change; the rest of the text stays byte for byte.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable

from ..errors import DataError

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a digit string (payment cards, IMEIs).

    >>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_ok(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _phone_ok(text: str) -> bool:
    return not text.startswith("+") or 8 <= sum(ch.isdigit() for ch in text) <= 15


def _ipv6_ok(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return sum(ch not in ":." for ch in text) >= 4


@dataclass(frozen=True)
class Kind:
    placeholder: str
    pattern: re.Pattern
    check: Callable[[str], bool] | None = None
    needs: str | None = None           # a character every match holds: only the lines that hold it are searched


KINDS: list[tuple[str, Kind]] = [      # applied in this order
    ("email", Kind("<EMAIL>", re.compile(
        r"(?<![\w.+-])[\w+-](?:[\w.+'-]*[\w+-])?@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
        r"\.[A-Za-z]{2,}(?![\w-])"), needs="@")),
    ("card", Kind("<CARD>", re.compile(r"(?<![\d+.,-])\d{4}(?:[ -]?\d{3,6}){1,4}(?!\d)"), _card_ok)),
    ("ip", Kind("<IP>", re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?![\w]|\.\d)"))),       # IPv4
    ("ip", Kind("<IP>", re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"),   # IPv6
                _ipv6_ok, needs=":")),
    ("phone", Kind("<PHONE>", re.compile(
        r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{1,8}){1,4}"
        r"|(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4})(?![\w]|[.-]\d)"), _phone_ok)),
]
PII_TYPES = tuple(dict.fromkeys(name for name, _ in KINDS))


def pii_types(names: list[str] | str) -> list[str]:
    """The PII types of a --redact-pii value: names separated by commas or given as a list
    (`all`: every type), checked against PII_TYPES.

    >>> pii_types("email, card"), pii_types(["all"]) == list(PII_TYPES)
    (['email', 'card'], True)
    """
    names = [names] if isinstance(names, str) else names
    parts = [p.strip().lower() for item in names for p in str(item).split(",") if p.strip()]
    if "all" in parts:
        return list(PII_TYPES)
    unknown = [p for p in parts if p not in PII_TYPES]
    if unknown:
        raise DataError(f"--redact-pii {', '.join(unknown)}: unknown PII type; use any of {', '.join(PII_TYPES)} "
                        f"(comma-separated) or all")
    return list(dict.fromkeys(parts))


def _lines_with(text: str, char: str, pattern: re.Pattern, replace: Callable[[re.Match], str]) -> str:
    """`pattern.sub(replace, text)` where every match holds `char` and no match spans a line:
    only the lines holding `char` are searched (an `@` is rare, a line of prose long)."""
    out, done = [], 0
    at = text.find(char)
    while at != -1:
        start, end = text.rfind("\n", 0, at) + 1, text.find("\n", at)
        end = len(text) if end == -1 else end
        out += [text[done:start], pattern.sub(replace, text[start:end])]
        done, at = end, text.find(char, end)
    return "".join(out) + text[done:] if out else text


class PiiScanner:
    """Called on each piece of text: counts every type in `found`, and returns the text with the
    types of `redact` replaced by their placeholders (counted in `redacted`)."""

    def __init__(self, redact: list[str] = ()):
        self.redact = set(pii_types(list(redact)))
        self.found = dict.fromkeys(PII_TYPES, 0)
        self.redacted = dict.fromkeys(PII_TYPES, 0)

    def __call__(self, text: str) -> str:
        for name, kind in KINDS:
            def one(m: re.Match, name=name, kind=kind) -> str:
                return self._one(name, kind, m[0])
            text = kind.pattern.sub(one, text) if kind.needs is None else _lines_with(text, kind.needs, kind.pattern, one)
        return text

    def _one(self, name: str, kind: Kind, match: str) -> str:
        if kind.check is not None and not kind.check(match):
            return match
        self.found[name] += 1
        if name not in self.redact:
            return match
        self.redacted[name] += 1
        return kind.placeholder

    def summary(self) -> dict:
        """What meta.json records: the counts found (of every type) and redacted (of those asked for)."""
        return {"found": dict(self.found), "redacted": {k: self.redacted[k] for k in PII_TYPES if k in self.redact}}
