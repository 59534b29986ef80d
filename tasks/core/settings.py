"""One typed settings object for hybridops; every module receives it explicitly, none reads env itself."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hybridops.tasks.core.errors import BadInputError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The checkout: data_contracts/ and examples/ live here beside the code."""

PACKAGED_EMBEDDING_MODEL = "packaged:all-MiniLM-L6-v2"
PACKAGED_LLM = "packaged:SmolLM2-135M-Instruct"

LOCAL_MINIO_ACCESS_KEY = "hybridops"
LOCAL_MINIO_SECRET_KEY = "hybridops-secret"
"""The built-in keys of the MinIO `hybridops up` runs on 127.0.0.1. They are public (they are in this file),
so they are used only for a local endpoint and refused for any other (see Settings.s3_credentials)."""
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
WEAVIATE_PEER_PORTS = ("http", "grpc", "gossip", "data", "raft", "raft_rpc")
"""The ports of each further Weaviate node of the production topology, in order (http and grpc first: clients use them)."""

EMPTY_MEANS_NONE = ("transfer_suite", "transfer_corpus", "train_min_steps", "lora_top_layers")
"""Optional settings on by default: set empty to switch them off (and passed on empty when off, see as_env)."""


class Settings(BaseSettings):
    """Effective configuration; env prefix HYBRIDOPS_, optional .env file."""

    model_config = SettingsConfigDict(
        env_prefix="HYBRIDOPS_", env_file=".env", extra="ignore", frozen=True
    )

    # Local state and ownership
    home: Path = Field(Path("var"), description="All local state: data, logs, PID files, caches.")
    namespace: str = Field(
        "hybridops",
        description="Prefix of every Weaviate collection, S3 key and Prefect name this instance owns.",
    )
    landing: str | None = Field(
        None, description="Landing zone: a folder path or s3://bucket/prefix (default $HOME/landing)."
    )
    store: str | None = Field(
        None,
        description="Object store for adapters, interactions, quarantine and history: folder or s3://bucket/prefix "
        "(default: $HOME/store, or s3://<bucket>/<namespace>/store when the landing zone is on S3).",
    )

    # Weaviate
    weaviate_url: str = "http://127.0.0.1:8080"
    weaviate_grpc_port: int = 50051
    weaviate_api_key: SecretStr | None = None
    weaviate_cluster_port: int = Field(
        7946, description="First of four ports a local Weaviate node uses internally (gossip, data, raft, raft rpc)."
    )
    weaviate_replication_factor: int | None = Field(
        None, ge=1, description="Replicas of each index generation. Unset: 1 (embedded topology), weaviate_nodes "
        "(production topology).")
    weaviate_consistency: str = Field(
        "QUORUM", pattern=r"^(ONE|QUORUM|ALL)$", description="Consistency level of hybridops' reads and writes on "
        "replicated collections (replication factor > 1): QUORUM acknowledges 2 of 3 replicas, so one node may be "
        "down and every read still overlaps every write (R + W > N).")

    # Production topology on one machine (`hybridops up --topology production`, infra/topology.py)
    topology: str = Field(
        "embedded", pattern=r"^(embedded|production)$", description="embedded: one process per service; production: "
        "Prefect on PostgreSQL with a work pool and workers, a Weaviate cluster, erasure-coded MinIO.")
    weaviate_nodes: int = Field(3, ge=1, description="Weaviate nodes of the production topology (node 1 answers on "
                                "weaviate_url; the others on ports from weaviate_peer_port).")
    weaviate_peer_port: int = Field(
        7960, ge=1, le=65535, description="First of six ports per further Weaviate node of the production topology "
        "(http, grpc, gossip, data, raft, raft rpc).")
    minio_drives: int = Field(4, ge=4, le=16, description="Drive folders of the production topology's erasure-coded "
                              "MinIO (4: any one may be lost).")
    postgres_port: int = Field(5433, ge=1, le=65535, description="PostgreSQL of the production topology (127.0.0.1).")
    postgres_password: SecretStr | None = Field(
        None, description="Password of the Prefect database role. Unset: `up` generates one into "
        "$HOME/run/postgres-prefect.secret (0600).")
    workers: int = Field(2, ge=1, description="`prefect worker` processes of the production topology.")
    worker_health_port: int = Field(
        4211, ge=1, le=65535, description="First of `workers` ports for the workers' health endpoints (127.0.0.1).")

    # S3 (MinIO locally, AWS in production: set s3_endpoint to empty)
    s3_endpoint: str | None = "http://127.0.0.1:9000"
    s3_access_key: SecretStr | None = Field(
        None, description="S3 keys (set both or neither). Unset: the built-in keys for the local MinIO (endpoint "
        "on 127.0.0.1/localhost, which `hybridops up` runs), else boto3's default AWS credential chain.",
    )
    s3_secret_key: SecretStr | None = None
    s3_region: str = "us-east-1"
    s3_bucket: str = "hybridops"
    s3_noncurrent_days: int = Field(30, ge=1, description="Production topology: the bucket keeps overwritten and "
                                    "deleted objects' versions this many days (restore, infra/PRODUCTION.md).")
    s3_console_port: int = Field(9001, description="MinIO console port when hybridops runs MinIO locally.")
    landing_webhook_port: int = Field(
        4290, ge=1, le=65535, description="Port of the landing webhook `hybridops serve` hosts on 127.0.0.1: the "
        "MinIO `hybridops up` starts POSTs its bucket notifications there (flows/orchestration/landing_webhook.py).")
    landing_webhook_token: SecretStr | None = Field(
        None, description="Shared secret (one word) MinIO sends as `Authorization: Bearer <token>` to the landing "
        "webhook. Unset: `hybridops up` generates one into $HOME/run/landing-webhook.token (0600), `serve` reads it.")

    # Prefect
    prefect_api_url: str = "http://127.0.0.1:4200/api"

    # Orchestration (deployments served by `hybridops serve`)
    runner_poll_seconds: float = Field(
        0.5, gt=0, description="How often `serve` asks the Prefect server for runs to start (event -> run latency)."
    )
    warm_start: bool = Field(
        True, description="`serve` starts flow runs from a pre-imported process (forkserver): ~1 s instead of ~8 s."
    )
    answer_service: bool = Field(
        True, description="`serve` also hosts the answering service on 127.0.0.1 (flows/orchestration/answer_service.py): "
        "the embedder, base LLM and champion adapter stay loaded and `hybridops ask` answers through it when it is up.")
    answer_service_port: int = Field(
        4291, ge=1, le=65535, description="Port of the answering service `hybridops serve` hosts on 127.0.0.1.")
    answer_service_token: SecretStr | None = Field(
        None, description="Shared secret (one word) `ask` sends as `Authorization: Bearer <token>` to the answering "
        "service. Unset: `serve` generates one into $HOME/run/answer-service.token (0600), `ask` reads it.")
    answer_service_timeout_s: float = Field(
        120.0, gt=0, description="How long `ask` waits for the answering service's reply before answering in-process.")
    watch_poll_seconds: float = Field(0.5, gt=0, description="How often watch-landing lists the landing zone.")
    watch_mode: str = Field(
        "notify", pattern=r"^(notify|poll)$", description="notify: a folder landing zone is watched through "
        "filesystem notifications (S3: the bucket-notification webhook), with a slow fallback listing; poll: "
        "list every watch_poll_seconds (no notifications).")
    watch_fallback_seconds: float = Field(
        300.0, gt=0, description="notify mode: the watcher lists the landing zone this often to announce what "
        "notifications missed (and once at the start of each run); an S3 zone waits longer, see "
        "watch_s3_lists_per_minute.")
    watch_s3_lists_per_minute: float = Field(
        1.0, gt=0, description="notify mode, S3 landing zone: the fallback listing averages at most this many "
        "LIST requests per minute: after a listing of N pages (1,000 keys each) the next waits N / this minutes "
        "(never less than watch_fallback_seconds): 100k keys -> every 100 min.")
    watch_run_minutes: float = Field(
        10.0, gt=0, description="Each watch-landing run polls this long; its interval schedule starts the next."
    )
    refresh_interval_minutes: float = Field(
        30.0, gt=0, description="Safety-net schedule of refresh-index (landing events start it within seconds)."
    )
    eval_cron: str = Field("0 3 * * *", description="Cron of evaluate-behaviour (default daily 03:00).")
    retrain_cron: str = Field("0 4 * * 0", description="Cron of retrain-adapter; it skips when there is nothing to do.")
    schedule_timezone: str = Field("UTC", description="Timezone of the cron schedules.")
    dask_workers: int = Field(
        0, ge=0, description="Run refresh batches on a local Dask cluster of N worker processes (0: in the flow)."
    )
    dask_address: str | None = Field(None, description="Run refresh batches on this existing Dask scheduler instead.")
    work_pool: str | None = Field(None, description="Work pool for `prefect deploy` (process or kubernetes).")

    # Models
    embedding_model: str = Field(PACKAGED_EMBEDDING_MODEL, description="HF id, local path or the packaged MiniLM.")
    embedding_bf16: bool = Field(True, description="Use bf16 when the CPU supports it and quality holds.")
    embedding_batch_size: int = 32
    llm_model: str = Field(PACKAGED_LLM, description="HF id, local path or the packaged SmolLM2-135M-Instruct.")
    llm_bf16: bool = Field(False, description="Opt-in: answer and evaluate with bf16 weights where the hardware has "
                           "bf16 math (adapters are merged in fp32 first): batched evals 1.8-3x faster, but a reply then "
                           "depends on the batch it was generated in (see llm.generation_dtype). Training is not "
                           "affected (fp32 weights + bf16 autocast).")
    models_cache: Path | None = Field(None, description="Converted-model cache (default ~/.cache/hybridops/models).")
    torch_threads: int | None = Field(
        None, ge=1, description="torch CPU threads (default: CPUs-1, min 1; spin-waiting threads stall a busy small box)."
    )
    batch_threads: int | None = Field(
        None, ge=1, description="torch CPU threads for training and eval suites, compute-bound batches that run "
        "alone (default: every CPU; see model_runtime.batch_threads for the measurement).")

    # Knowledge path
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    max_document_bytes: int = 2_000_000
    max_text_chars: int = 500_000
    search_k: int = 5
    search_mode: str = Field(
        "hybrid", pattern=r"^(hybrid|vector|bm25)$", description="How `ask`, evals and `search` retrieve: hybrid, "
        "vector or bm25 (a profile tuned on the live index generation, `hybridops index tune`, comes first).")
    hybrid_alpha: float = 0.5
    recall_k: int = 5
    recall_floor: float = 0.5
    recall_tolerance: float = 0.05
    golden_retrieval: Path | None = Field(
        None, description="Golden retrieval set (JSONL) for `eval retrieval` and the rebuild gate "
        "(default: examples/golden_retrieval.jsonl)."
    )
    refresh_batch_docs: int = Field(256, description="Documents per refresh batch (one Prefect task each).")
    refresh_max_delete_share: float = Field(
        0.2, ge=0, le=1, description="A refresh (or rebuild) that would remove more than this share of the live "
        "index's documents stops before writing anything until confirmed (`--allow-mass-delete`).")
    refresh_mass_delete_min_docs: int = Field(
        10, ge=0, description="The mass-deletion guard applies only when more than this many documents would go.")
    lock_timeout_s: float = Field(1800.0, ge=0, description="How long refresh, rebuild, retrain, promote and "
                                  "rollback wait for the namespace lock before giving up.")
    lock_ttl_s: float = Field(60.0, gt=1, description="Lease of a namespace lock; renewed while held, so a "
                              "holder that died frees it after this long.")

    # Behaviour path
    max_new_tokens: int = 96
    eval_batch_tokens: int = Field(
        32768, ge=0, description="Behaviour evals decode prompts in batches whose rows x (longest prompt + "
        "max_new_tokens) stays under this many tokens (the KV cache: ~1.5 GB at 32768 for SmolLM2-135M in fp32), "
        "each prefilled in groups of similar length (same replies as one at a time; on the 2-core box the example "
        "suite with re-asks runs 14.1 cases/min against 8.3 one at a time, 11.4 with 8192); 0 = one prompt at a time.")
    eval_reuse_replies: bool = Field(
        True, description="Evals and retrains reuse a reply the same model gave to the same prompt before "
        "(greedy decoding: identical; see tasks/behaviour/reply_cache.py) instead of generating it again.")
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora_top_layers: int | None = Field(
        None, ge=1, description="LoRA only in the top N decoder layers (empty: all). Training then back-propagates "
        "through those layers only.")
    train_steps: int = 45
    train_batch_size: int = 4
    learning_rate: float = 1e-3
    max_seq_len: int = 1024
    train_max_batch_tokens: int = 1024
    train_bf16: bool = True
    train_seed: int = 0
    train_validation_fraction: float = 0.15
    train_min_steps: int | None = Field(
        None, description="Early stopping (off when empty): from this step on, every train_probe_every steps, "
        "held-out examples are answered and training stops once their format and cited passages agree with them "
        "(>= train_stop_agreement); train_steps is the maximum. Off by default: measured on the shipped data, the "
        "135M adapter cites passage 1 of held-out examples whatever the order (agreement 0.40 at 45 steps), so the "
        "probe never stops it and only costs time.")
    train_probe_every: int = Field(8, ge=1)
    train_probe_examples: int = Field(12, ge=0)
    train_stop_agreement: float = Field(0.9, ge=0, le=1)
    train_augment: bool = Field(True, description="Add derived training examples (shuffled passages and renamed doc "
                                "ids; refusal twins without the answering passages) so the adapter learns to "
                                "copy from the context, not to memorise the corpus.")
    train_refusal_share: float = Field(0.3, ge=0, lt=1, description="Refusal twins are added only while refusals "
                                       "stay at most this share of the training data.")
    train_replay_share: float = Field(0.25, ge=0, le=1, description="Replay (tasks/behaviour/replay.py): examples "
                                      "earlier adapters were trained on are added up to this share of the current "
                                      "examples, so a removed file or aged-out feedback is not forgotten; 0 = off.")
    drift_alpha: float = 0.05
    drift_min_n: int = 8
    pass_rate_floor: float = 0.5
    behaviour_suite: Path = Field(
        Path("examples/behaviour_suite.yaml"), description="Behaviour eval suite (YAML) run by `hybridops eval`."
    )
    transfer_suite: Path | None = Field(
        Path("examples/transfer/behaviour_suite.yaml"),
        description="Out-of-domain behaviour suite (YAML, never trained on): retrain also evaluates challenger and "
        "champion on it over transfer_corpus and rejects a challenger that transfers worse; empty disables the gate.",
    )
    transfer_corpus: Path | None = Field(
        Path("examples/transfer/corpus"),
        description="Folder of the out-of-domain documents transfer_suite asks about, indexed in the side "
        "namespace <namespace>_transfer; empty disables the transfer gate.",
    )
    transfer_gate_checks: list[str] = Field(
        ["json_format", "sources_valid", "cites_gold", "grounded", "refuses_without_context", "answers_when_supported"],
        description="The transfer-suite checks that can block a promotion (behaviour); the others (facts such as "
        "expected_keywords) are shown in the decision, not gated.")
    eval_sample_interactions: int = Field(4, description="Recent logged questions added to each behaviour eval.")
    eval_sample_days: int = 7
    promotion_tolerance: float = 0.05
    promotion_alpha: float = Field(0.05, gt=0, lt=1, description="Level of the paired (exact McNemar, Holm-"
                                   "corrected) tests a challenger must pass: significantly better on a target check, "
                                   "significantly worse on none.")
    regression_corrections_max: int = Field(32, ge=0, description="The latest human corrections answered by both "
                                            "models at each retrain as regression cases (0: none).")
    allow_base_fallback: bool = Field(
        True,
        description="When the champion cannot be used (corrupt or empty adapters/CHAMPION.json, a corrupt or "
        "unverifiable manifest, tampered files), `ask` answers with the bare base model and a warning instead "
        "of failing; set false to make `ask` fail with an integrity error (exit 4) instead.",
    )

    @field_validator(*EMPTY_MEANS_NONE, mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        """`HYBRIDOPS_TRANSFER_SUITE=` (empty) switches an optional path off instead of meaning the cwd."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("home")
    @classmethod
    def _home_is_absolute(cls, value: Path) -> Path:
        """Services and flow runs start inside the home (or elsewhere): a relative home would put their data
        under home/home (HYBRIDOPS_HOME=var: Weaviate's data in var/var/data)."""
        return Path(value).expanduser().absolute()

    @field_validator("namespace")
    @classmethod
    def _namespace_is_safe(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", value):
            raise ValueError("namespace must be lower-case letters, digits or '_', starting with a letter")
        return value

    # Derived locations --------------------------------------------------------------------------
    @property
    def landing_uri(self) -> str:
        return self.landing or str(self.home / "landing")

    @property
    def store_uri(self) -> str:
        if self.store:
            return self.store
        if self.landing_uri.startswith("s3://"):
            return f"s3://{self.s3_bucket}/{self.namespace}/store"
        return str(self.home / "store")

    @property
    def models_dir(self) -> Path:
        return self.models_cache or Path.home() / ".cache" / "hybridops" / "models"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def topology_record(self) -> Path:
        """Where `hybridops up` records the topology it started (`down` removes it)."""
        return self.run_dir / "topology"

    def recorded_topology(self) -> str | None:
        try:
            return self.topology_record.read_text().strip() or None
        except FileNotFoundError:
            return None

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def weaviate_port(self) -> int:
        return _port(self.weaviate_url, 8080)

    @property
    def s3_port(self) -> int:
        return _port(self.s3_endpoint or "", 9000)

    @property
    def s3_endpoint_is_local(self) -> bool:
        """The endpoint is the MinIO hybridops runs itself: any port on 127.0.0.1/localhost/::1 (as
        `hybridops up` starts MinIO on 127.0.0.1 at the endpoint's port). Empty (AWS) or any other host: not."""
        return bool(self.s3_endpoint) and (urlparse(self.s3_endpoint).hostname or "").lower() in LOCAL_HOSTS

    def s3_credentials(self) -> tuple[str, str] | None:
        """The (access key, secret key) an S3 client uses, or None for boto3's default credential chain
        (env AWS_*, profiles, instance/task roles). Raises BadInputError for a half-configured pair and for
        the built-in MinIO keys aimed at an endpoint that is not the local MinIO."""
        access = self.s3_access_key.get_secret_value() if self.s3_access_key else None
        secret = self.s3_secret_key.get_secret_value() if self.s3_secret_key else None
        if (access is None) != (secret is None):
            raise BadInputError("set both HYBRIDOPS_S3_ACCESS_KEY and HYBRIDOPS_S3_SECRET_KEY, or neither "
                                "(then the local MinIO's built-in keys or the AWS credential chain are used)")
        if access is None:
            return (LOCAL_MINIO_ACCESS_KEY, LOCAL_MINIO_SECRET_KEY) if self.s3_endpoint_is_local else None
        if secret == LOCAL_MINIO_SECRET_KEY and not self.s3_endpoint_is_local:
            raise BadInputError(
                "the built-in MinIO keys are only for the local MinIO; set HYBRIDOPS_S3_ACCESS_KEY/SECRET_KEY or "
                f"leave them unset to use the AWS credential chain (endpoint: {self.s3_endpoint or 'AWS'})")
        return access, secret

    def minio_root_credentials(self) -> tuple[str, str]:
        """Root user and password of the MinIO `hybridops up` runs: the configured keys, else the built-in ones
        (never raises, so `up`/`down`/`status` work; a half-configured pair is refused when a client is made)."""
        access = self.s3_access_key.get_secret_value() if self.s3_access_key else LOCAL_MINIO_ACCESS_KEY
        secret = self.s3_secret_key.get_secret_value() if self.s3_secret_key else LOCAL_MINIO_SECRET_KEY
        return access, secret

    @property
    def weaviate_peer_entry_points(self) -> list[tuple[int, int]]:
        """(http, grpc) ports of the production topology's nodes 2..n on weaviate_url's host (none otherwise): every
        node answers for every collection, so a client goes on to them when node 1 is down."""
        if self.topology != "production":
            return []
        return [(base, base + 1) for base in map(self.weaviate_peer_ports_start, range(2, self.weaviate_nodes + 1))]

    def weaviate_peer_ports_start(self, node: int) -> int:
        """Node n > 1 of the production topology uses one port per WEAVIATE_PEER_PORTS label from here."""
        return self.weaviate_peer_port + len(WEAVIATE_PEER_PORTS) * (node - 2)

    @property
    def weaviate_replicas(self) -> int:
        """Replication factor of new index generations: the setting, else one per node of the topology."""
        if self.weaviate_replication_factor is not None:
            return self.weaviate_replication_factor
        return self.weaviate_nodes if self.topology == "production" else 1

    @property
    def work_pool_name(self) -> str:
        """The process work pool the production topology's workers poll."""
        return self.work_pool or f"{self.namespace}-process"

    @property
    def prefect_port(self) -> int:
        return _port(self.prefect_api_url, 4200)

    @property
    def collection_prefix(self) -> str:
        """Weaviate class names must start upper-case: 'hybridops' -> 'Hybridops'."""
        return self.namespace[:1].upper() + self.namespace[1:]

    def redacted(self) -> dict[str, Any]:
        """Settings as plain JSON-able data, secrets shown as '**********'."""
        data = self.model_dump(mode="json")
        for name, value in self:
            if isinstance(value, SecretStr):
                data[name] = "**********"
        data["derived"] = {
            "landing_uri": self.landing_uri,
            "store_uri": self.store_uri,
            "models_dir": str(self.models_dir),
        }
        return data


    def as_env(self) -> dict[str, str]:
        """HYBRIDOPS_* variables that recreate these settings in a child process (secrets included)."""
        env: dict[str, str] = {}
        for name, value in self:
            if value is None and name in EMPTY_MEANS_NONE:
                value = ""  # off, not "unset": unset would bring the default back in the child
            elif value is None:
                continue
            elif isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, list):
                value = json.dumps(value)
            env[f"HYBRIDOPS_{name.upper()}"] = str(value)
        return env


def _port(url: str, default: int) -> int:
    return urlparse(url).port or default


def load_settings(**overrides: Any) -> Settings:
    """The composition root's way to build settings (env + .env + explicit overrides).

    The topology is the one asked for here (`--topology`), else the one `hybridops up` recorded in this home, else
    HYBRIDOPS_TOPOLOGY / .env, else embedded: every command of a home runs against the topology that is up there,
    whatever a stale environment says."""
    settings = Settings(**overrides)
    recorded = None if "topology" in overrides else settings.recorded_topology()
    return settings.model_copy(update={"topology": recorded}) if recorded else settings
