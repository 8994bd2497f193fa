"""The rerank front end: every dialect's request/response models, the scoring, the routes."""
