"""Built-in synthetic latent-factor worlds (to be implemented)."""
