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
    parse_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Time limit (s) to read and check one structure from a file or upload; slower ones are rejected.",
    )
    parse_memory_mb: int = Field(
        default=2048,
        ge=0,
        description="Address-space limit (MB) of the worker process that reads untrusted structures; 0: no limit.",
    )
    max_upload_mb: float = Field(
        default=10.0,
        gt=0,
        description="Largest structure file (MB) accepted by the page's upload and, per file, by `data ingest`.",
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

    host: str = Field(default="127.0.0.1", description="Address the app listens on (`python app.py --host`).")
    port: int = Field(default=8050, ge=1, le=65535, description="Port the app listens on (`python app.py --port`).")
    threads: int = Field(default=64, ge=1, le=512,
                         description="Request threads of each process of the server (`python app.py`). Many: a "
                                     "thread whose decode waits for the model holds no CPU, and a click must not "
                                     "queue behind it.")
    server_workers: int = Field(default=0, ge=0, le=64,
                                description="Processes of the server (`python app.py --workers`; gunicorn): each "
                                            "holds its own model and maps (about 1.35 GB) and its own interpreter "
                                            "lock. 0: one per CPU core, at most 4; 1: waitress in one process.")
    connection_limit: int = Field(default=200, ge=1, description="Most open connections the server accepts at once.")
    decode_cache: int = Field(default=4096, ge=0, description="Decoded latents kept in memory (least recently used "
                                                           "go first; 0: none). A decode is deterministic, so a path "
                                                           "from the same material or a re-opened link is not "
                                                           "decoded again.")
    decode_workers: int = Field(default=0, ge=0, le=16, description="Threads of each server process that run "
                                "batched decodes at once (each takes its share of the cores while the others decode). "
                                "0: the cores shared out among the server's processes, at most 2 each (one each for "
                                "gunicorn's one process per core).")
    decode_max_batch: int = Field(default=32, ge=1, le=1024, description="Most latents in one batched decode "
                                  "(half of it while another worker decodes more than half): a click on empty space "
                                  "waits for at most the pass that is running.")
    compile_encoder: bool = Field(default=True, description="Server processes run the encoder's edge-wise work "
                                  "(harmonics, radial networks, messages) in kernels that torch.compile builds with "
                                  "the machine's C++ compiler (at the first start, then kept on disk), the messages "
                                  "in a C kernel of the project's (models/messages.c, built in under a second, kept "
                                  "in ~/.cache or $EXPLORER_KERNEL_CACHE); without a compiler they run it eagerly "
                                  "and say so in the log.")
    decode_batching: bool = Field(
        default=True,
        description="Decodes that arrive while the model is busy run together in one forward pass (many users at "
                    "once); False decodes each request alone, one after the other.",
    )
    max_jobs: int = Field(default=2, ge=1, le=64, description="Background jobs of the page (relaxations, map builds, "
                          "ChemEnv labels) that run at once, each in its own process (a relaxation's holds about "
                          "0.6 GB); later ones wait.")
    max_waiting_jobs: int = Field(default=16, ge=0, le=1024, description="Background jobs that may wait for a free "
                                  "slot; a request beyond them is refused with a message.")
    debug: bool = Field(default=False, description="Dash debug mode (hot reload, error overlay); off when serving.")
    checkpoint: Path = Field(
        default=PROJECT_ROOT / "models" / "checkpoints" / "default.pt",
        description="Autoencoder checkpoint used to encode and decode (models/crystal/checkpoint.py format).",
    )
    motif_checkpoint: Path = Field(
        default=PROJECT_ROOT / "models" / "checkpoints" / "motif.pt",
        description="Motif autoencoder checkpoint (models/motif): the latents of the motif map and its decodes.",
    )
    device: str = Field(default="", description="Torch device ('cpu', 'cuda', 'cuda:1'); empty picks cuda, else cpu.")
    encode_batch_size: int = Field(default=128, ge=1, description="Crystals per encoder batch when building a map.")
    umap_n_neighbors: int = Field(default=15, ge=2, description="UMAP n_neighbors of the 2D map.")
    umap_min_dist: float = Field(default=0.1, ge=0, description="UMAP min_dist of the 2D map.")
    umap_metric: str = Field(default="euclidean", description="UMAP distance metric in latent space.")
    umap_seed: int = Field(default=42, description="UMAP random_state: the same inputs give the same map.")
    umap_fit_max: int = Field(default=100_000, ge=10, description="A map of more materials fits UMAP on a seeded "
                              "sample of this many and places the rest with its transform (in partitions, on the "
                              "Dask cluster of `build --workers/--scheduler` when given).")
    map_markers_max: int = Field(default=100_000, ge=1, description="A map of more points is drawn as a density "
                                 "image rendered by the server for the window on screen (clicks, lasso and search "
                                 "still reach every point); fewer are WebGL markers.")
    map_window_max: int = Field(default=50_000, ge=1, description="On a density-image map, the points of the window "
                                "on screen are also drawn as markers (hover, click) once there are at most this many.")
    background_checks_max: int = Field(default=100_000, ge=0, description="The server computes a dataset's "
                                       "missing reconstruction check, environments, structure and motif maps in the "
                                       "background only up to this many materials; bigger ones are built by "
                                       "`python -m explorer build` (with --workers/--scheduler).")
    known_starts: int = Field(default=8, ge=0, le=32, description="A decode also offers the encoder this many known "
                              "crystals of its stoichiometry, nearest to its latent (renamed and rescaled; "
                              "models.crystal.search.KnownCells); 0: the decoder's candidates only.")
    known_starts_dataset: str = Field(default="known", description="The dataset whose built map gives those known "
                                      "crystals (when it is not built, decodes use the decoder's candidates only).")
    inverse_k: int = Field(
        default=8, ge=1, description="Known latents averaged (inverse-distance weighted) to decode an empty map point."
    )
    relax_fmax: float = Field(
        default=0.1, gt=0, lt=10,
        description="A relaxation (CHGNet, FIRE, positions and cell) stops when every force is below this (eV/Å).",
    )
    relax_max_steps: int = Field(default=300, ge=1, le=100_000,
                                 description="A relaxation stops after this many FIRE steps, converged or not.")
    n_nearest: int = Field(default=5, ge=1, description="Nearest known materials listed beside a structure.")
    chemenv_seconds: float = Field(default=60.0, gt=0, le=3600,
                                   description="Time limit (s) of ChemEnv's finer labels of the structure on screen.")

    @property
    def atlas_dir(self) -> Path:
        """Cached maps (latents, UMAP reducer and coordinates) per dataset and checkpoint."""
        return self.data_dir / "atlas"

    @property
    def tables_dir(self) -> Path:
        """Built Parquet tables and their reports."""
        return self.data_dir / "tables"

    @property
    def cache_dir(self) -> Path:
        """Downloaded wheels and extracted data files."""
        return self.data_dir / "cache"
