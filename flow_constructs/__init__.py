"""The construct library shared by StandardStack and UltraStack: one module per concern."""
