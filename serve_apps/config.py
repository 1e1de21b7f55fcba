"""The serving app's one typed config: engines, answer paths, router, ingress limits, A/B tests, logs.

Every Ray option (replicas, autoscaling, resources, queue bounds) lives here, per
deployment, never in decorators. The Serve config files in ``serve_apps/configs/`` carry
it as the application's ``args``; ``build_app`` validates it with :class:`ServeAppConfig`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from rayfleet.config import BaseConfig
from rayfleet.engines.base import EngineConfig, SamplingConfig

MODEL_PREFIX = "rayfleet"  # served names: rayfleet (routed), rayfleet-<path>, rayfleet-<path>:<adapter>@<version>


class AutoscalingConfig(BaseConfig):
    """Serve autoscaling of one deployment (replicas follow the ongoing requests per replica)."""

    min_replicas: int = Field(1, ge=0, description="Fewest replicas; 0 lets an idle deployment scale to zero.")
    max_replicas: int = Field(1, ge=1, description="Most replicas.")
    initial_replicas: int | None = Field(None, ge=0, description="Replicas at start (default: min_replicas).")
    target_ongoing_requests: float = Field(
        2.0, gt=0, description="Ongoing requests per replica that autoscaling aims at."
    )
    upscale_delay_s: float = Field(3.0, ge=0, description="Load must stay high this long before adding replicas.")
    downscale_delay_s: float = Field(60.0, ge=0, description="Load must stay low this long before removing replicas.")

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> "AutoscalingConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}")
        return self


class DeploymentOptions(BaseConfig):
    """Ray options of one deployment."""

    num_replicas: int | None = Field(None, ge=1, description="Fixed replica count; leave empty when autoscaling.")
    autoscaling: AutoscalingConfig | None = Field(None, description="Autoscaling instead of a fixed replica count.")
    num_cpus: float = Field(0.1, ge=0, description="CPUs each replica reserves.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs each replica reserves (GPU clusters).")
    max_ongoing_requests: int = Field(64, ge=1, description="Requests one replica works on at once.")
    max_queued_requests: int = Field(
        256, ge=-1, description="Requests waiting per caller before Serve rejects (-1: no bound)."
    )
    graceful_shutdown_timeout_s: float = Field(
        10.0, ge=0, description="How long a stopping replica finishes its requests."
    )
    health_check_period_s: float = Field(10.0, gt=0, description="Seconds between replica health checks.")
    health_check_timeout_s: float = Field(60.0, gt=0, description="A health check slower than this fails.")

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> "DeploymentOptions":
        if self.num_replicas is not None and self.autoscaling is not None:
            raise ValueError("set num_replicas or autoscaling, not both")
        return self

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``."""
        options: dict[str, Any] = dict(
            ray_actor_options={"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            max_ongoing_requests=self.max_ongoing_requests,
            max_queued_requests=self.max_queued_requests,
            graceful_shutdown_timeout_s=self.graceful_shutdown_timeout_s,
            health_check_period_s=self.health_check_period_s,
            health_check_timeout_s=self.health_check_timeout_s,
        )
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling.model_dump(exclude_none=True)
        else:
            options["num_replicas"] = self.num_replicas or 1
        return options


class LLMEngineConfig(BaseConfig):
    """One LLM deployment: a vLLM async engine on a base model, with multi-LoRA."""

    engine: EngineConfig = Field(
        default_factory=lambda: EngineConfig(kind="vllm", cpu_kv_cache_gib=1.0, max_model_len=2048),
        description="Model and engine settings (shared with the batch engines).",
    )
    max_loras: int = Field(4, ge=0, description="LoRA adapters active in one batch; 0 disables adapters.")
    max_lora_rank: int = Field(16, ge=1, description="Largest adapter rank accepted.")
    max_cpu_loras: int = Field(8, ge=1, description="Adapters kept loaded per replica (least recently used evicted).")
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(num_cpus=1.0, max_ongoing_requests=64),
        description="Ray options of the engine deployment.",
    )


class PathCommon(BaseConfig):
    """Settings every answer path has."""

    engine: str = Field("default", description="Name of the LLM deployment (in engines) this path generates with.")
    timeout_s: float = Field(
        30.0, gt=0,
        description="Longest the path may go quiet: to its first token, then between chunks. "
        "Past it the path has failed: "
        "its fallback answers (a stream already begun ends with an error event). "
        "A long answer that keeps coming never times out.",
    )  # fmt: skip
    fallback: list[str] = Field(
        default_factory=list, description="Paths tried next, in order, if this one fails; one fallback per request."
    )
    system_prompt: str | None = Field(None, description="System message put before the conversation, if any.")
    deployment: DeploymentOptions = Field(
        default_factory=DeploymentOptions, description="Ray options of the path deployment."
    )


class BasePathConfig(PathCommon):
    """The base model as it is."""

    kind: Literal["base"] = Field("base", description="Path type.")


class FineTunedPathConfig(PathCommon):
    """LoRA adapters from the registry on the engine's base model."""

    kind: Literal["finetuned"] = Field("finetuned", description="Path type.")
    registry: str = Field(..., description="Registry root (local or s3://) holding the adapters kind.")
    default_adapter: str | None = Field(
        None, description="Adapter reference used when a request names none, e.g. qa@promoted."
    )


class RagPathConfig(PathCommon):
    """Retrieve chunks from the index, answer grounded on them, cite them."""

    kind: Literal["rag"] = Field("rag", description="Path type.")
    index: str = Field(..., description="Index root (local or s3://) written by jobs.build_index.")
    index_refresh_s: float = Field(
        60.0,
        ge=0,
        description="Least seconds between looks for a newer index version, loaded in the background and "
        "swapped in whole (documents ingested since start become answerable without a redeploy); 0: never.",
    )
    top_k: int = Field(3, ge=1, le=20, description="Chunks retrieved per question.")
    hybrid: bool = Field(
        True,
        description="Fuse BM25 into the dense ranking (see docs/retrieval.md): names and titles in questions match.",
    )
    max_context_tokens: int = Field(
        768, ge=64, description="Most prompt tokens of retrieved text; lower-ranked chunks are cut first."
    )
    min_score: Annotated[float, Field(ge=-1.0, le=1.0)] | Literal["auto"] | None = Field(
        None,
        description="Passages whose cosine is below this are not used, and a question no passage reaches goes down the "
        "fallback chain instead of being answered from unrelated text; auto: each index version's threshold, as "
        "router.relevance sets it; none: always the top_k.",
    )
    max_history_tokens: int = Field(
        512,
        ge=0,
        description="Most tokens of a chat's earlier turns kept before the grounded question (oldest dropped first); "
        "0 answers each question alone.",
    )
    registry: str | None = Field(None, description="Registry root holding `adapter`.")
    adapter: str | None = Field(
        None,
        description="Adapter reference that answers (e.g. qa@promoted); none, or none resolvable yet: the base model.",
    )

    @model_validator(mode="after")
    def _adapter_has_registry(self) -> "RagPathConfig":
        if self.adapter and not self.registry:
            raise ValueError(f"the RAG path's adapter {self.adapter!r} needs `registry`")
        return self

    @model_validator(mode="after")
    def _min_score_has_fallback(self) -> "RagPathConfig":
        if self.min_score is not None and not self.fallback:
            raise ValueError("the RAG path's min_score needs a fallback to answer questions no passage reaches")
        return self


class FaultInjectionPathConfig(PathCommon):
    """A fault injector standing in for a broken path (tests, drills): it errors, hangs, or stalls."""

    kind: Literal["fault_injection"] = Field("fault_injection", description="Path type.")
    mode: Literal["error", "hang", "stall"] = Field(
        "error", description="error: raise at once; hang: never answer; stall: answer one chunk, then never the next."
    )


PathConfig = Annotated[
    Union[BasePathConfig, FineTunedPathConfig, RagPathConfig, FaultInjectionPathConfig], Field(discriminator="kind")
]


class RelevanceConfig(BaseConfig):
    """Whether a routed request is about the indexed documents, asked of the index itself
    (rayfleet.routing.relevance)."""

    index: str = Field(
        ..., description="Index root to ask (usually the RAG path's index); its newest version is followed."
    )
    min_score: Annotated[float, Field(ge=-1.0, le=1.0)] | Literal["auto"] = Field(
        "auto",
        description="Least cosine similarity of the best passage for a request to count as about the documents; "
        "auto: set on each index version, just above the most similar of the router's general requests "
        "and at least 0.30.",
    )
    relevant_label: str = Field("rag", description="Label (or path) of requests about the documents.")
    other_label: str = Field(
        "base", description="Label (or path) of requests that are not; other labels are left as the classifier said."
    )
    refresh_s: float = Field(
        60.0, ge=0, description="Least seconds between two looks for a newer index version (0: never)."
    )

    @model_validator(mode="after")
    def _two_labels(self) -> RelevanceConfig:
        if self.relevant_label == self.other_label:
            raise ValueError(f"router.relevance: relevant_label and other_label are both {self.relevant_label!r}")
        return self


class RouterConfig(BaseConfig):
    """The router deployment: the trained classifier of rayfleet.routing, and optionally the relevance gate."""

    model: str | None = Field(
        None, description="Router folder written by jobs.train_router; none sends routed requests to default_path."
    )
    label_paths: dict[str, str] = Field(
        default_factory=dict, description="Classifier label -> path name, where they differ."
    )
    default_path: str = Field(
        "base", description="Path for labels that name no path, and when no router is configured."
    )
    timeout_s: float = Field(
        2.0,
        gt=0,
        description="Longest wait for the router; slower or failed routing sends the request to default_path.",
    )
    embedding_dims: int = Field(
        16,
        ge=0,
        description="Dimensions of the projected prompt embedding logged per routed request for drift monitoring "
        "(0: none).",
    )
    placement: Literal["deployment", "ingress"] = Field(
        "deployment",
        description="deployment: the Router deployment, scaled and resourced on its own "
        "(a transformer embedder, a GPU); "
        "ingress: inside each ingress replica, without a call between deployments "
        "(for the static-embedding router, ~1 ms a request).",
    )
    deployment: DeploymentOptions = Field(
        default_factory=DeploymentOptions, description="Ray options of the router deployment (placement: deployment)."
    )
    relevance: RelevanceConfig | None = Field(
        None,
        description="Let the index decide between relevant_label and other_label "
        "(the classifier keeps its other labels): "
        "questions about documents the router was never trained on reach the RAG path. "
        "Costs the query's embedding (~11 ms on a CPU core).",
    )

    def label_path(self, label: str) -> str:
        """The path a classifier label names."""
        return self.label_paths.get(label, label)

    @model_validator(mode="after")
    def deployment_needs_its_placement(self) -> RouterConfig:
        if self.placement == "ingress" and self.deployment != DeploymentOptions():
            raise ValueError(
                "router.deployment is set but router.placement is ingress: the router runs in the ingress replicas"
            )
        return self


class AuthConfig(BaseConfig):
    """API keys: every /v1 request needs ``Authorization: Bearer <key>``."""

    keys_env: str = Field("RAYFLEET_API_KEYS", description="Environment variable with comma-separated keys.")
    keys_file: str | None = Field(None, description="Secrets file with one key per line (joins the variable's keys).")
    required: bool = Field(True, description="False serves without keys (never outside a laptop).")


class LimitsConfig(BaseConfig):
    """Request limits, answered with clear 4xx errors."""

    max_prompt_tokens: int = Field(1024, ge=1, description="Longest prompt (rendered, in tokens) accepted.")
    max_tokens: int = Field(256, ge=1, description="Largest max_tokens accepted.")
    default_max_tokens: int = Field(64, ge=1, description="max_tokens when a request sets none.")
    max_choices: int = Field(8, ge=1, description="Most answers one request may ask for: its n times its prompts.")
    max_in_flight: int = Field(
        64,
        ge=1,
        description="Answers one ingress replica admits at once (a request counts its n; one alone is always "
        "admitted); more get 503.",
    )
    max_body_bytes: int = Field(
        1 << 20,
        ge=1024,
        description="Largest request body read (413 past it, before any parsing); the prompt limit applies within it.",
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 503.")

    @model_validator(mode="after")
    def _default_within_limit(self) -> "LimitsConfig":
        """A default above the limit would refuse every request that sets none: one chosen is refused, the
        built-in one (64) follows a lower limit."""
        if self.default_max_tokens > self.max_tokens:
            if self.default_max_tokens != type(self).model_fields["default_max_tokens"].default:
                raise ValueError(f"default_max_tokens {self.default_max_tokens} is above max_tokens {self.max_tokens}: "
                                 "every request that sets none would be refused")  # fmt: skip
            self.default_max_tokens = self.max_tokens
        return self


class IngressConfig(BaseConfig):
    """The OpenAI-compatible ingress."""

    auth: AuthConfig = Field(default_factory=AuthConfig, description="API keys.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Prompt, output and concurrency limits.")
    user_header: str = Field("x-user-id", description="Header naming the end user (sticky A/B arms).")
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(max_ongoing_requests=256), description="Ray options of the ingress."
    )


class ABArm(BaseConfig):
    """One arm of an A/B test."""

    name: str = Field(..., min_length=1, description="Arm name (response header, metrics, logs).")
    weight: float = Field(..., gt=0, description="Relative share of users.")
    model: str = Field(..., description="What the arm serves: rayfleet-<path> or rayfleet-<path>:<adapter>@<version>.")


class ABTestConfig(BaseConfig):
    """Split the users of one target between arms, sticky per user."""

    name: str = Field(..., min_length=1, description="Test name (also salts the user hash).")
    applies_to: str = Field(..., description="Requests whose target is this (e.g. rayfleet-finetuned) are split.")
    arms: list[ABArm] = Field(..., min_length=2, description="The arms and their weights.")


class RequestLogConfig(BaseConfig):
    """Request logs in Parquet, written in batches."""

    uri: str | None = Field(None, description="Folder (local or s3://) for the logs; none disables them.")
    batch_rows: int = Field(256, ge=1, description="Rows per file when traffic is heavy.")
    flush_seconds: float = Field(30.0, gt=0, description="Longest a row waits before its batch is written.")


class ServeAppConfig(BaseConfig):
    """The OpenAI-compatible serving application."""

    engines: dict[str, LLMEngineConfig] = Field(
        default_factory=lambda: {"default": LLMEngineConfig()}, description="LLM deployments by name, shared by paths."
    )
    paths: dict[str, PathConfig] = Field(
        ..., min_length=1, description="Answer paths by name (served as rayfleet-<name>)."
    )
    router: RouterConfig = Field(default_factory=RouterConfig, description="The router deployment.")
    ingress: IngressConfig = Field(default_factory=IngressConfig, description="The HTTP ingress.")
    ab_tests: list[ABTestConfig] = Field(default_factory=list, description="A/B tests.")
    request_log: RequestLogConfig = Field(default_factory=RequestLogConfig, description="Request logs.")
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_tokens=64), description="Defaults for fields a request does not set."
    )

    @model_validator(mode="after")
    def _names_resolve(self) -> "ServeAppConfig":
        for name, path in self.paths.items():
            if "-" in name or ":" in name:
                raise ValueError(f"path name {name!r} may not hold '-' or ':'")
            if path.engine not in self.engines:
                raise ValueError(f"path {name!r} uses engine {path.engine!r}, not one of {sorted(self.engines)}")
            unknown = [target for target in path.fallback if target not in self.paths or target == name]
            if unknown:
                raise ValueError(f"path {name!r} falls back to unknown or itself: {unknown}")
        targets = [self.router.default_path, *self.router.label_paths.values()]
        if self.router.relevance is not None:
            relevance = self.router.relevance
            targets += [self.router.label_path(relevance.relevant_label), self.router.label_path(relevance.other_label)]
        unknown = [target for target in targets if target not in self.paths]
        if unknown:
            raise ValueError(f"router names paths that do not exist: {unknown} (paths: {sorted(self.paths)})")
        return self

    @model_validator(mode="after")
    def _limits_fit_the_engines(self) -> "ServeAppConfig":
        """The longest prompt accepted plus the largest answer fit every engine a path uses: a request
        within the limits would otherwise be refused by the engine, past the ingress's own checks."""
        limits = self.ingress.limits
        for name in sorted({path.engine for path in self.paths.values()}):
            context = self.engines[name].engine.max_model_len
            if limits.max_prompt_tokens + limits.max_tokens > context:
                raise ValueError(f"ingress.limits.max_prompt_tokens {limits.max_prompt_tokens} + max_tokens "
                                 f"{limits.max_tokens} is above engine {name!r}'s max_model_len {context}")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _ab_tests_resolve(self) -> "ServeAppConfig":
        """Each test splits requests for one of this app's paths between models it serves (an arm naming none
        would fail every request of its users), with arms, names and targets each once."""
        from serve_apps.targets import UnknownModelError, parse_model

        kinds = {name: path.kind for name, path in self.paths.items()}
        for index, test in enumerate(self.ab_tests):
            arms = ((f"arms[{i}].model", arm.model) for i, arm in enumerate(test.arms))
            for where, model in [("applies_to", test.applies_to), *arms]:
                try:
                    target = parse_model(model, kinds)
                except UnknownModelError as error:
                    raise ValueError(f"ab_tests[{index}].{where}: {error}") from None
                if target is None:
                    raise ValueError(f"ab_tests[{index}].{where}: {model!r} is the routed model, not one path; "
                                     f"name a path: {', '.join(f'rayfleet-{name}' for name in kinds)}")  # fmt: skip
            arm_names = [arm.name for arm in test.arms]
            if len(set(arm_names)) < len(arm_names):
                raise ValueError(f"ab_tests[{index}] ({test.name!r}) names an arm twice: {arm_names}")
        for field in ("name", "applies_to"):
            values = [getattr(test, field) for test in self.ab_tests]
            if len(set(values)) < len(values):
                raise ValueError(f"two ab_tests share a {field}: {values} (a request takes part in one test)")
        return self


class HttpOptions(BaseConfig):
    """Where Serve's HTTP proxy listens."""

    host: str = Field("127.0.0.1", description="Bind address (0.0.0.0 inside a cluster).")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")


class ServeApplicationFile(BaseConfig):
    """One application of a Serve config file, its ``args`` being this app's config."""

    name: str = Field(..., description="Serve application name.")
    route_prefix: str = Field("/", description="URL prefix of the application.")
    import_path: Literal["serve_apps.openai_app:build_app"] = Field(..., description="The application builder.")
    runtime_env: dict[str, Any] | None = Field(None, description="Ray runtime environment (Serve's own schema).")
    args: ServeAppConfig = Field(..., description="The application's config.")


class ServeConfigFile(BaseConfig):
    """A ``serve run`` / ``serve deploy`` config file of this project (serve_apps/configs/*.yaml)."""

    proxy_location: Literal["HeadOnly", "EveryNode", "Disabled"] = Field(
        "HeadOnly", description="Where HTTP proxies run."
    )
    http_options: HttpOptions = Field(default_factory=HttpOptions, description="HTTP proxy address.")
    applications: list[ServeApplicationFile] = Field(..., min_length=1, description="The applications.")
