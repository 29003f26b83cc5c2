"""Why a record is not kept: the reason classes with the sentence users see, and the limits that decide.

Shared by the parsers (``formats``), the record checks (``records``) and every entry point, so that a
file gets the same verdict in an upload, an ingest and the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_Z = 94  # plutonium: heavier elements are not in any default source and are rejected

# Rejection classes, each with the sentence shown to users.
REASONS = {
    "parse_error": "the record could not be parsed as a crystal structure",
    "empty": "the record holds no atoms",
    "binary_file": "the file is binary, not a text structure format",
    "too_large": "the file is larger than the size limit",
    "partial_occupancy": "some sites are partially occupied (disordered); only ordered crystals are kept",
    "ambiguous_site_label": "a site label does not name one element (e.g. 'Wat', 'OH' with implicit hydrogen)",
    "unsupported_element": f"an element is not a real element up to Z={MAX_Z}",
    "too_many_atoms": "the cell has more sites than the limit (settings.max_sites)",
    "non_finite": "the lattice or coordinates contain NaN or infinity",
    "bad_cell": "the cell lengths or angles do not describe a real cell",
    "degenerate_lattice": "the lattice vectors are (nearly) coplanar: zero cell volume",
    "overlapping_atoms": "two atoms are closer than settings.min_distance",
    "not_periodic": "the structure has no periodic cell (a molecule)",
    "timeout": "reading the record took longer than the time limit (settings.parse_seconds)",
    "out_of_memory": "reading the record needed more memory than the limit (settings.parse_memory_mb)",
}


class Rejected(Exception):
    """A record that is not kept: ``reason`` is a key of REASONS, ``detail`` quotes the offending value."""

    def __init__(self, reason: str, detail: str):
        if reason not in REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # keep (reason, detail) when sent between build processes
        return (Rejected, (self.reason, self.detail))

    @property
    def sentence(self) -> str:
        """The detail, then the reason in words: what a user reads ('x.cif: cell angle ... (the cell ...)')."""
        return f"{self.detail} ({REASONS[self.reason]})"

    def as_dict(self) -> dict[str, str]:
        """{"reason", "message": the reason in words, "detail"}: how reports and verdicts carry a rejection."""
        return {"reason": self.reason, "message": REASONS[self.reason], "detail": self.detail}


@dataclass(frozen=True)
class Limits:
    """The checks of ``make_record`` (copied from Settings so that worker processes get plain data)."""

    max_sites: int = 500
    min_distance: float = 0.5
    symprec: float = 0.1
    angle_tolerance: float = 5.0
