"""The OpenAI-compatible Serve application: thin deployments over the plain servers, and ``build_app``.

    serve run serve_apps/configs/local.yaml              # or: serve deploy ..., make serve
    build_app({"paths": {...}, ...})                       # args: a ServeAppConfig as a dict

Deployments (each with its own Ray options from :class:`ServeAppConfig`):

- ``OpenAIIngress``: HTTP, auth, limits, A/B, fallback (:class:`serve_apps.ingress.OpenAIServer`);
- ``Router``: the trained classifier (:class:`serve_apps.router_server.RouterServer`), unless
  ``router.placement`` is ``ingress``, where each ingress replica holds its own;
- one per path, ``<Kind>Path_<name>`` (e.g. ``RagPath_rag``, ``FaultInjectionPath_broken``);
- one per engine, ``LLMServer_<name>``: vLLM with continuous batching and multi-LoRA,
  shared by the paths that name it.

A streaming call to another deployment that its caller stops reading (a path past its
``timeout_s``, a client gone) is cancelled (:func:`cancelled_when_abandoned`), and Serve
cancels the calls that request made in turn, down to the engine, which aborts the generation.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from ray import serve
from ray.serve.handle import DeploymentHandle

from rayfleet.engines.base import SamplingConfig
from serve_apps.config import DeploymentOptions, ServeAppConfig
from serve_apps.ingress import OpenAIServer, build_http_app
from serve_apps.llm_server import LLMServer
from serve_apps.metrics import ServeMetrics
from serve_apps.paths import AdapterSource, BasePath, FaultInjectionPath, FineTunedPath, PathRequest, RagPath
from serve_apps.router_server import RouterServer

# Calls between this app's deployments go straight to the callee replica's gRPC server rather
# than through Ray's object store: on this 2-core machine a router-sized unary call took 4.0-5.1
# ms p50 instead of 5.3-6.9, a two-hop stream's first chunk 7-9 ms instead of 12-17
# (python -m bench.serve_handles; README, "Online serving").
DIRECT_CALLS = {"_by_reference": False}

PATH_CLASSES = {"base": BasePath, "finetuned": FineTunedPath, "rag": RagPath}
PATH_DEPLOYMENT_NAMES = {
    "base": "BasePath",
    "finetuned": "FineTunedPath",
    "rag": "RagPath",
    "fault_injection": "FaultInjectionPath",
}


async def cancelled_when_abandoned(response) -> AsyncIterator[Any]:
    """The items of a streaming handle call (``DeploymentResponseGenerator``); the call is
    cancelled when the reader stops before its end.

    Left alone, an abandoned call runs on at the callee: a path that timed out and fell back
    would go on generating tokens nobody reads, on the engine its fallback needs.
    """
    ended = False
    try:
        async for item in response:
            yield item
        ended = True
    finally:
        if not ended:
            response.cancel()


class LLMDeployment:
    """Serve glue over :class:`LLMServer`; its generations' outcomes go to Ray's metrics
    (``ray_rayfleet_llm_generations_total`` by ``outcome``)."""

    def __init__(self, config: dict):
        from ray.serve.metrics import Counter

        from serve_apps.config import LLMEngineConfig

        generations = Counter("rayfleet_llm_generations", "Generations ended, by outcome.", tag_keys=("outcome",))
        self.server = LLMServer(
            LLMEngineConfig.model_validate(config), lambda outcome: generations.inc(tags={"outcome": outcome})
        )

    async def stream(self, prompt_ids: list[int], sampling: SamplingConfig, adapter: AdapterSource | None = None):
        async for delta in self.server.stream(prompt_ids, sampling, adapter):
            yield delta

    def generation_counts(self) -> dict[str, int]:
        """This replica's generations: running, finished, failed, cancelled."""
        return self.server.counts.as_dict()

    def __del__(self):
        self.server.close()


class PathDeployment:
    """Serve glue over one answer path; generation goes to its LLM deployment's handle, whose context length
    (``max_model_len``) the RAG path keeps its prompts inside."""

    def __init__(
        self, config: dict, engine_model: str, engine: DeploymentHandle | None, context_length: int | None = None
    ):
        from pydantic import TypeAdapter

        from serve_apps.config import PathConfig

        path_config = TypeAdapter(PathConfig).validate_python(config)
        if path_config.kind == "fault_injection":
            self.path = FaultInjectionPath(path_config)
            return
        streaming_engine = engine.options(stream=True, **DIRECT_CALLS)

        def generate(prompt_ids, sampling, adapter):
            return cancelled_when_abandoned(streaming_engine.stream.remote(prompt_ids, sampling, adapter))

        if path_config.kind == "rag":
            self.path = RagPath(path_config, engine_model, generate, context_length)
        else:
            self.path = PATH_CLASSES[path_config.kind](path_config, engine_model, generate)

    async def stream(self, request: PathRequest):
        async for chunk in self.path.stream(request):
            yield chunk


class RouterDeployment:
    """Serve glue over :class:`RouterServer`."""

    def __init__(self, config: dict, paths: list[str]):
        from serve_apps.config import RouterConfig

        self.server = RouterServer(RouterConfig.model_validate(config), paths)

    async def route(self, text: str):
        return await self.server.route(text)


@serve.ingress()
class IngressDeployment:
    """Serve glue over :class:`OpenAIServer`: handles in, FastAPI app out, request-log flusher running."""

    def __init__(self, config: dict, router: DeploymentHandle | None, paths: dict[str, DeploymentHandle]):
        import asyncio

        app_config = ServeAppConfig.model_validate(config)
        streaming_paths = {name: handle.options(stream=True, **DIRECT_CALLS) for name, handle in paths.items()}
        route = route_function(app_config, router)

        def call_path(name: str):
            return lambda request: cancelled_when_abandoned(streaming_paths[name].stream.remote(request))

        paths_by_name = {name: call_path(name) for name in paths}
        self.server = OpenAIServer(app_config, route, paths_by_name, ServeMetrics(export_to_ray=True))
        self.log_flusher = asyncio.get_running_loop().create_task(self.server.request_log.run())

    def __serve_build_asgi_app__(self):
        return build_http_app(self.server)

    def __del__(self):
        if hasattr(self, "log_flusher"):  # not when __init__ failed
            self.log_flusher.cancel()
            self.server.request_log.flush()


def route_function(config: ServeAppConfig, router: DeploymentHandle | None):
    """How the ingress routes: through the Router deployment's handle, or, without one
    (``router.placement: ingress``), with its own :class:`RouterServer`."""
    if router is None:
        return RouterServer(config.router, list(config.paths)).route
    direct = router.options(**DIRECT_CALLS)

    async def route(text: str):
        return await direct.route.remote(text)

    return route


def deployment(cls, name: str, options: DeploymentOptions):
    return serve.deployment(cls).options(name=name, **options.serve_options())


def build_app(args: dict[str, Any]) -> serve.Application:
    """The application for ``serve run`` / ``serve deploy`` (``args`` validated as :class:`ServeAppConfig`)."""
    config = args if isinstance(args, ServeAppConfig) else ServeAppConfig.model_validate(args)
    engines = {
        name: deployment(LLMDeployment, f"LLMServer_{name}", engine.deployment).bind(engine.model_dump(mode="json"))
        for name, engine in config.engines.items()
        if any(path.engine == name and path.kind != "fault_injection" for path in config.paths.values())
    }
    paths = {
        name: deployment(PathDeployment, f"{PATH_DEPLOYMENT_NAMES[path.kind]}_{name}", path.deployment).bind(
            path.model_dump(mode="json"),
            config.engines[path.engine].engine.model,
            engines.get(path.engine),
            config.engines[path.engine].engine.max_model_len,
        )
        for name, path in config.paths.items()
    }
    router = None  # placement: ingress, each ingress replica routes in-process
    if config.router.placement == "deployment":
        router = deployment(RouterDeployment, "Router", config.router.deployment).bind(
            config.router.model_dump(mode="json"), list(config.paths)
        )
    ingress = deployment(IngressDeployment, "OpenAIIngress", config.ingress.deployment)
    return ingress.bind(config.model_dump(mode="json"), router, paths)
