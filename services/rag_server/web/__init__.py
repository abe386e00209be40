"""The web app: HTML, CSS and JavaScript modules under static/, served by rag-server at `/` (no build)."""
