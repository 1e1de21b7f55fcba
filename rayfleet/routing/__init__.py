"""The request router's classifier: which path (RAG, fine-tuned, base, or yours) a prompt takes.

- :mod:`rayfleet.routing.examples`: labelled prompts from a file, or the default set built
  from the project's own data.
- :class:`RequestRouter`: MiniLM embeddings + calibrated logistic regression, with a
  confidence threshold below which requests go to a default path.
- :mod:`rayfleet.routing.training`: splits, fitting, threshold choice and the report.
- :mod:`rayfleet.routing.relevance`: the relevance gate, which asks the index whether a
  request is about the documents (questions about documents the classifier never saw).
"""

from rayfleet.routing.router import RequestRouter, RouteDecision

__all__ = ["RequestRouter", "RouteDecision"]
