"""HTTP API: thin routes that validate input and call domain services. No SQL here."""
