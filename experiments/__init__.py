"""Sacred experiments (one module each) and their tracking: file records and W&B."""
