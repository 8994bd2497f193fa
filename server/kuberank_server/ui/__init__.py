"""The playground web UI: `client` (HTTP + error mapping), `rendering` (HTML), `app` (Gradio)."""
