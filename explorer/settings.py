"""Every knob of the explorer in one place: one pydantic ``BaseSettings`` (env prefix ``EXPLORER_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Settings read from the environment (``EXPLORER_DATA_DIR=...``) or passed as keywords."""

    model_config = SettingsConfigDict(env_prefix="EXPLORER_", extra="forbid")

    data_dir: Path = Field(
        default=PROJECT_ROOT / "data",
        description="Where built tables, downloaded package files and caches are written.",
    )
    shared_data_dir: Path = Field(
        default=PROJECT_ROOT.parent / "shared" / "data",
        description="Folder of extra training sets (perov_5, carbon_24, mp_20_subset); used when present.",
    )
    max_sites: int = Field(
        default=500,
        ge=1,
        description="Structures with more sites than this (as read, before reduction) are rejected.",
    )
    min_distance: float = Field(
        default=0.5,
        gt=0,
        description="Two atoms closer than this many Å make a structure 'overlapping atoms' and rejected.",
    )
    symprec: float = Field(
        default=0.1,
        gt=0,
        description="spglib distance tolerance (Å) for space groups and primitive cells, as Materials Project uses.",
    )
    angle_tolerance: float = Field(
        default=5.0,
        description="spglib angle tolerance (degrees).",
    )
    workers: int = Field(
        default=0,
        ge=0,
        description="Processes used to build tables; 0 means one per CPU core.",
    )
    pip_executable: str = Field(
        default="",
        description="Python used to run `pip download` for package-shipped data; empty means this interpreter.",
    )

    @property
    def tables_dir(self) -> Path:
        """Built Parquet tables and their reports."""
        return self.data_dir / "tables"

    @property
    def cache_dir(self) -> Path:
        """Downloaded wheels and extracted data files."""
        return self.data_dir / "cache"
