"""Live LLM policies: tasks, backends, judges, and the concurrent runner with its cache."""
