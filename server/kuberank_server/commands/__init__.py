"""Console commands: `cli` (the `kuberank-server` entry point), serve, token, apikey, ui, dev."""
