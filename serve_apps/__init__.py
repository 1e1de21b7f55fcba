"""Ray Serve applications: plain server classes plus a builder per app.

- :mod:`serve_apps.openai_app`: the OpenAI-compatible endpoint (``build_app``), its
  deployments (ingress, router, one per answer path, LLM engines) and their Ray glue.
- :mod:`serve_apps.config`: :class:`ServeAppConfig`, the one typed config of the app.
- configs/: Serve config files for ``serve run`` / ``serve deploy``.
"""
