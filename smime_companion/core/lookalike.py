"""Addresses written to look like other addresses.

A phishing message can carry a real certificate for a name that only looks familiar: a domain
label mixing Latin and Cyrillic letters ("pаypal.example" with a Cyrillic "а"), or written
wholly in Cyrillic letters that each have a Latin twin under a Latin top-level domain
("аррӏе.com", which reads "apple.com"). Its signature is valid, and says only that the
message comes from that address. Browsers show such names in their ``xn--`` form (Chromium's
IDN spoof checks, UTS #39's mixed-script and whole-script confusables); here the verdict names
them (``look-alike-address``) so the reader can say so beside "valid".

Pure: an address in, a yes or no out.
"""

from __future__ import annotations

import re
import unicodedata

from smime_companion.core.mime import comparable_address

_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK")
# Lower-case Cyrillic and Greek letters a reader takes for Latin ones in most fonts (addresses
# are compared lower-cased), after Chromium's list of Cyrillic-Latin confusables.
_LATIN_TWINS = {
    "CYRILLIC": frozenset("асԁеһіјӏорԛѕԝхуьҽпгѵѡ"),
    "GREEK": frozenset("αικνορτυχω"),
}
# The letters of a label or a local part: words between dots, hyphens and the like.
_WORDS = re.compile(r"[^\W\d_]+")
_MAX_LENGTH = 320  # longer is no address (RFC 5321: 64 + 1 + 255); not looked at


def is_lookalike(address: str) -> bool:
    """Whether ``address`` (a mailbox, in either form of its domain) has a local part or a
    domain label that mixes Latin, Cyrillic and Greek letters, or a label of the domain written
    wholly in Cyrillic or Greek letters with Latin twins under an ASCII top-level domain."""
    if address.isascii() and "xn--" not in address.lower():
        return False  # the common case: nothing beyond ASCII to confuse
    if len(address) > _MAX_LENGTH:
        return False
    local, _, domain = comparable_address(address).rpartition("@")
    labels = domain.split(".")
    latin_tld = labels[-1].isascii()
    if any(_mixes_scripts(part) for part in (local, *labels)):
        return True
    return latin_tld and any(_all_latin_twins(label) for label in labels[:-1])


def _scripts(text: str) -> set[str]:
    """The scripts among Latin, Cyrillic and Greek that the letters of ``text`` are in."""
    found = set()
    for word in _WORDS.findall(text):
        for char in word:
            script = unicodedata.name(char, "").partition(" ")[0]
            if script in _SCRIPTS:
                found.add(script)
    return found


def _mixes_scripts(text: str) -> bool:
    return not text.isascii() and len(_scripts(text)) > 1


def _all_latin_twins(label: str) -> bool:
    """Whether every letter of ``label`` is a Cyrillic (or every one a Greek) letter with a
    Latin twin."""
    letters = "".join(_WORDS.findall(label))
    if not letters or letters.isascii():
        return False
    scripts = _scripts(letters)
    if len(scripts) != 1:
        return False
    twins = _LATIN_TWINS.get(scripts.pop())
    return twins is not None and all(char in twins for char in letters)
