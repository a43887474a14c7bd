"""Everything that makes a shipped file: θ from ablations, the evidence calibration, the support detector, the
verifier, and their training data. The runtime (``at2_rag``) never imports this package."""
